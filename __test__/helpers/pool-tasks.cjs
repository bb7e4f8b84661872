/** A CommonJS task module (for the process pool tests): exports assigned at run time. */
const name = 'tri' + 'ple'
module.exports[name] = (x) => x * 3
