// Package httpapi is opsbox's HTTP adapter: Huma v2 operations over the
// lifecycle use cases. Huma generates the OpenAPI 3.1 document from the
// types here and validates requests against it before a handler runs, so
// handlers see well-formed input and only domain rules remain to check.
//
// Every error is an RFC 9457 problem+json document. Domain errors map to
// statuses in one place, [problemFor]: unknown id 404, illegal transition
// 409, invalid field 422, unreachable database or queue 503. Huma answers
// malformed JSON with 400 and a body over 1 MiB with 413 by itself.
package httpapi
