package pullkittest

import (
	"encoding/json"
	"net/http"
)

// ErrorCode is an error code of the distribution API, the "code" of an entry in a
// registry's JSON error body. The kit answers with the codes, messages and statuses CNCF
// distribution uses, so a client's error handling can be tested against them; use the
// constants with ErrorResponse to make the kit answer one on demand.
type ErrorCode string

// The error codes the kit sends (each with distribution's message and HTTP status).
const (
	// CodeUnknown is distribution's catch-all (500).
	CodeUnknown ErrorCode = "UNKNOWN"
	// CodeUnsupported answers an operation the registry does not do (405).
	CodeUnsupported ErrorCode = "UNSUPPORTED"
	// CodeUnauthorized asks for credentials, or refuses the ones sent (401).
	CodeUnauthorized ErrorCode = "UNAUTHORIZED"
	// CodeDenied refuses access by policy (403).
	CodeDenied ErrorCode = "DENIED"
	// CodeUnavailable says the registry is down for now (503).
	CodeUnavailable ErrorCode = "UNAVAILABLE"
	// CodeTooManyRequests is a rate limit (429).
	CodeTooManyRequests ErrorCode = "TOOMANYREQUESTS"
	// CodeDigestInvalid is a digest in the path that does not parse (400).
	CodeDigestInvalid ErrorCode = "DIGEST_INVALID"
	// CodeNameInvalid is a repository name the registry refuses (400).
	CodeNameInvalid ErrorCode = "NAME_INVALID"
	// CodeNameUnknown is a repository the registry does not have (404). Distribution
	// sends it only for tags/list; see WithNameUnknown.
	CodeNameUnknown ErrorCode = "NAME_UNKNOWN"
	// CodeManifestUnknown is a tag or manifest digest the repository does not have, or a
	// manifest of a type the client did not accept (404).
	CodeManifestUnknown ErrorCode = "MANIFEST_UNKNOWN"
	// CodeManifestInvalid is a manifest the registry cannot serve as asked (400).
	CodeManifestInvalid ErrorCode = "MANIFEST_INVALID"
	// CodeBlobUnknown is a blob the repository does not have (404).
	CodeBlobUnknown ErrorCode = "BLOB_UNKNOWN"
	// CodePaginationNumberInvalid is a bad n in tags/list (400).
	CodePaginationNumberInvalid ErrorCode = "PAGINATION_NUMBER_INVALID"
)

// codeInfo is distribution's message and status for each code (registry/api/errcode).
var codeInfo = map[ErrorCode]struct {
	message string
	status  int
}{
	CodeUnknown:                 {"unknown error", http.StatusInternalServerError},
	CodeUnsupported:             {"The operation is unsupported.", http.StatusMethodNotAllowed},
	CodeUnauthorized:            {"authentication required", http.StatusUnauthorized},
	CodeDenied:                  {"requested access to the resource is denied", http.StatusForbidden},
	CodeUnavailable:             {"service unavailable", http.StatusServiceUnavailable},
	CodeTooManyRequests:         {"too many requests", http.StatusTooManyRequests},
	CodeDigestInvalid:           {"provided digest did not match uploaded content", http.StatusBadRequest},
	CodeNameInvalid:             {"invalid repository name", http.StatusBadRequest},
	CodeNameUnknown:             {"repository name not known to registry", http.StatusNotFound},
	CodeManifestUnknown:         {"manifest unknown", http.StatusNotFound},
	CodeManifestInvalid:         {"manifest invalid", http.StatusBadRequest},
	CodeBlobUnknown:             {"blob unknown to registry", http.StatusNotFound},
	CodePaginationNumberInvalid: {"invalid number of results requested", http.StatusBadRequest},
}

// Status is the HTTP status distribution sends with the code (500 for a code it does not
// know).
func (c ErrorCode) Status() int {
	if i, ok := codeInfo[c]; ok {
		return i.status
	}
	return http.StatusInternalServerError
}

// Message is distribution's message for the code ("unknown error" for a code it does not
// know).
func (c ErrorCode) Message() string {
	if i, ok := codeInfo[c]; ok {
		return i.message
	}
	return codeInfo[CodeUnknown].message
}

// jsonNull is a detail written as null, as distribution writes a nil access list.
var jsonNull = json.RawMessage("null")

// errorBody is distribution's error envelope with one entry; a nil detail is left out.
func errorBody(code ErrorCode, message string, detail any) []byte {
	if message == "" {
		message = code.Message()
	}
	type entry struct {
		Code    ErrorCode `json:"code"`
		Message string    `json:"message"`
		Detail  any       `json:"detail,omitempty"`
	}
	b, err := json.Marshal(struct {
		Errors []entry `json:"errors"`
	}{[]entry{{code, message, detail}}})
	if err != nil { // only a detail that cannot be encoded; the kit passes none
		b, _ = json.Marshal(map[string]any{"errors": []entry{{code, message, nil}}})
	}
	return append(b, '\n')
}

// is28 reports whether w answers for a registry WithDistribution28.
func is28(w http.ResponseWriter) bool {
	lw, ok := w.(*logWriter)
	return ok && lw.r.cfg.v28
}

// jsonType is the Content-Type of a JSON answer: distribution 3 sends no charset, 2.8
// does.
func jsonType(w http.ResponseWriter) string {
	if is28(w) {
		return "application/json; charset=utf-8"
	}
	return "application/json"
}

// detail28 returns the error detail 2.8 writes (d28) or 3's (d3), as w's registry
// answers.
func detail28(w http.ResponseWriter, d28, d3 any) any {
	if is28(w) {
		return d28
	}
	return d3
}

// writeError answers with distribution's error body for code; message "" is the code's
// own message.
func writeError(w http.ResponseWriter, code ErrorCode, message string, detail any) {
	w.Header().Set("Content-Type", jsonType(w))
	w.WriteHeader(code.Status())
	_, _ = w.Write(errorBody(code, message, detail))
}
