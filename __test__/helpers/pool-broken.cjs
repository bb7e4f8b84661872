// A task module (CommonJS) that throws while it loads (for the pool's load-failure tests).
exports.f = () => 1
throw new RangeError('the CommonJS module fails to load on purpose')
