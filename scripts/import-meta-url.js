// Injected by scripts/build-js.mjs into the CommonJS build, which has no `import.meta`: the URL
// of the bundle itself, standing in for `import.meta.url`.
export const importMetaUrl = require('node:url').pathToFileURL(__filename).href
