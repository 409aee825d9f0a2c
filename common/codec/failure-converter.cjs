// Failure messages and stack traces can carry connection strings or SQL; encoding them as
// payloads lets the encryption codec cover them too. Plain CommonJS because the SDK require()s it
// by path in the worker, the client and the workflow bundle alike.
const { DefaultFailureConverter } = require('@temporalio/common');

exports.failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
