// Package jsonrpc implements JSON-RPC 2.0 (https://www.jsonrpc.org/specification)
// for the endpoint server's local API: the message types, strict decoding of
// requests and batches, response encoding, a server that runs a body against
// a HandlerFunc, an http.Handler around it, and a small client.
//
// # Requests
//
// A body is one Request object or a batch: a JSON array of them. Decoding is
// strict, and the rules are those of the specification:
//
//   - A body that is not valid JSON, or not valid UTF-8 (RFC 8259 §8.1), is
//     answered with a single Parse error (-32700, id null), even inside a
//     batch. Nothing in it runs.
//   - An empty array is answered with a single Invalid Request (-32600, id
//     null), and so is a batch longer than Options.MaxBatch.
//   - Every element that is not a valid Request object gets its own Invalid
//     Request response; the valid elements of the same batch still run.
//     An element is valid when it is an object whose members are exactly
//     "jsonrpc" (the string "2.0"), "method" (a string), and optionally
//     "params" (an object or an array; null is refused) and "id" (a string,
//     a number or null). Any other member, or a member given twice, makes the
//     element invalid.
//   - The error for an invalid element carries the element's id when the id
//     member was present once and had a valid type, and null otherwise, as
//     the specification's examples do.
//
// Go's encoding/json keeps the last of duplicate keys where other parsers
// keep the first. A proxy or log that reads the first "method" or "id" would
// then see a different call from the one we run, so duplicate members of a
// request object are refused. Duplicates inside params are the handler's
// business: params reach it as the raw bytes received.
//
// Nesting depth is bounded by encoding/json's validator (10 000 levels); the
// body size is bounded by the caller (Options.MaxBodyBytes over HTTP), and the
// number of elements by Options.MaxBatch.
//
// # Ids
//
// An ID keeps the exact JSON text it was received as, and responses echo
// that text byte for byte, so a number is never rounded through float64 and
// a string keeps its escapes. Two ids are Equal when they have the same type
// and value: "1" and 1 are different ids; 1, 1.0 and 1e0 are the same number,
// and "a" and "\u0061" the same string. A request whose id is null is a
// request, answered with id null; only a request without an id member is a
// notification.
//
// # Responses
//
// Responses are encoded compactly with members in the order of the
// specification's examples (jsonrpc, result or error, id). A batch is
// answered with an array in request order, notifications left out; a body
// of notifications only, or a single notification, gets no response at all
// (HTTP 204). Method names beginning with "rpc." are reserved by the
// specification; this package hands them to the handler like any other,
// which should answer Method not found.
//
// # Error codes
//
// The standard codes and the Kurier codes, which use the range the
// specification reserves for implementation-defined server errors
// (-32000 to -32099):
//
//	code    constant            message                       meaning
//	-32700  CodeParseError      Parse error                   body is not valid JSON or not UTF-8
//	-32600  CodeInvalidRequest  Invalid Request               not a valid Request object; empty or too long batch; HTTP method or content type wrong
//	-32601  CodeMethodNotFound  Method not found              no such method
//	-32602  CodeInvalidParams   Invalid params                params missing, of the wrong shape, or refused by the method
//	-32603  CodeInternalError   Internal error                the server failed; details are logged, never sent
//	-32001  CodeNotAllowed      Not allowed                   bearer token missing or wrong, or the directory does not let the caller call the service
//	-32002  CodeUnknownMember   Unknown member                the member named is not in the directory, or not active
//	-32003  CodeUnavailable     Unavailable                   the peer cannot be reached now (no relay route or connection)
//	-32004  CodeTimeout         Timeout                       the peer did not answer in time
//	-32005  CodeQueueFull       Queue full                    the outbox for the recipient, or the peer's inbox for us, is full
//	-32006  CodeTooLarge        Too large                     a body, params or message exceeds a size limit
//	-32007  CodeExpired         Expired                       the message's deadline passed before it was delivered
//	-32008  CodeSealed          Cannot open sealed envelope   no matching seal key, bad signature or failed decryption
//
// -32000 and -32009 to -32099 are reserved for future Kurier codes; other
// software must not use them. CodeText returns the message for a code.
//
// # Concurrency
//
// Serve runs the elements of a batch concurrently, at most
// Options.Concurrency at a time, and answers in request order. Handlers must
// therefore be safe for concurrent use. A handler's *Error (also when
// wrapped) is sent as it is; any other error, a panic, or a result that
// cannot be encoded becomes Internal error, and the detail goes to
// Options.Logger.
package jsonrpc
