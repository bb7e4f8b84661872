// Preloaded (through NODE_OPTIONS) into every Node process a Markdown code block starts, when the
// doc-block test runs it: appends this process's pid to the file the test names, so the segments
// it leaves in /dev/shm are told apart from those of other tests running at the same time.
const file = process.env.SHMPIPE_DOC_BLOCK_PIDS
if (file) require('node:fs').appendFileSync(file, `${process.pid}\n`)
