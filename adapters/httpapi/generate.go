package httpapi

// The committed OpenAPI document; CI fails when it drifts from the code.
//go:generate go run ./internal/openapigen ../../docs/api/openapi.yaml
