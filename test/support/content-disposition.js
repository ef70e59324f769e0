// Jest cannot require the ES module that @fastify/static uses (Node 20 can); in tests it gets
// the same function from the package's last CommonJS major, under the name it imports.
const contentDisposition = require('content-disposition-cjs');

module.exports = { create: contentDisposition, parse: contentDisposition.parse };
