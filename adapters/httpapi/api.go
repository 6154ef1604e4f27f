package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Service is what the API needs from the core; *lifecycle.Service has it.
type Service interface {
	Create(ctx context.Context, spec task.Spec) (*task.Task, error)
	Get(ctx context.Context, id string) (*task.Task, error)
	List(ctx context.Context, q ports.ListQuery) (ports.Page, error)
	Update(ctx context.Context, id string, p task.Patch) (*task.Task, error)
	Delete(ctx context.Context, id string) error
	Run(ctx context.Context, id string) (*task.Task, error)
	Cancel(ctx context.Context, id string) (*task.Task, error)
	DeadLetters(ctx context.Context, after string, limit int) ([]ports.DeadLetter, string, error)
	RetryDeadLetter(ctx context.Context, id string) (*task.Task, error)
	DiscardDeadLetter(ctx context.Context, id string) error
	Ready(ctx context.Context) error
}

// APIVersion is the version of the HTTP API contract shown in the OpenAPI
// document. It changes when the contract does, not with every build.
const APIVersion = "1.0.0"

// Config tunes the API.
type Config struct {
	// ReadyTimeout bounds the dependency checks of GET /ready (default 500 ms),
	// so the probe answers 503 quickly when the database or queue is down.
	ReadyTimeout time.Duration
	// StoreTimeout bounds the work of one request (default 5 s): a request
	// that cannot reach the database answers 503 instead of hanging.
	StoreTimeout time.Duration
	// Tokens, when not empty, are required as bearer tokens on every
	// operation but the probes (and /docs and /openapi.*, which are not
	// operations).
	Tokens *Tokens
	// Middlewares run around every operation, outermost first, before the
	// token check (so a metrics middleware also counts refused requests).
	Middlewares []func(huma.Context, func(huma.Context))
	Logger      *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 500 * time.Millisecond
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// MaxBodyBytes is the largest request body accepted; larger ones get 413.
const MaxBodyBytes = 1 << 20

// maxBodySetting is what Huma needs to accept MaxBodyBytes: it refuses a
// body that reaches its limit, so the limit is one byte more.
const maxBodySetting = MaxBodyBytes + 1

// DefaultPageSize is the page size of GET /tasks when no limit is given.
const DefaultPageSize = 50

// New returns the HTTP handler of the opsbox API, with /openapi.json,
// /openapi.yaml and /docs.
func New(svc Service, cfg Config) http.Handler {
	mux := http.NewServeMux()
	api := humago.New(mux, NewConfig())
	Register(api, svc, cfg)
	return withProblemFallback(mux)
}

// NewConfig returns the Huma configuration of the opsbox API.
func NewConfig() huma.Config {
	hc := huma.DefaultConfig("opsbox", APIVersion)
	hc.Info.Description = "Create tasks, run them in the background, and follow them to DONE or FAILED. " +
		"Every operation but the probes needs `Authorization: Bearer <token>` when the server has API tokens configured (OPSBOX_API_TOKENS)."
	hc.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		securityScheme: {Type: "http", Scheme: "bearer", Description: "An API token from OPSBOX_API_TOKENS."},
	}
	// No $schema links in bodies: clients get plain task objects.
	hc.CreateHooks = nil
	return hc
}

// OpenAPI returns the API's OpenAPI 3.1 document as YAML, as served at
// /openapi.yaml. `go generate` writes it to docs/api/openapi.yaml so the
// contract can be reviewed in diffs.
func OpenAPI() ([]byte, error) {
	api := humago.New(http.NewServeMux(), NewConfig())
	Register(api, nil, Config{})
	return api.OpenAPI().YAML()
}

// Register adds opsbox's operations to api.
func Register(api huma.API, svc Service, cfg Config) {
	cfg.setDefaults()
	h := &handlers{svc: svc, readier: svc, cfg: cfg}
	api.UseMiddleware(cfg.Middlewares...)
	api.UseMiddleware(requireToken(api, cfg.Tokens))
	h.registerProbes(api)

	huma.Register(api, huma.Operation{
		OperationID: "create-task", Method: http.MethodPost, Path: "/tasks", Tags: []string{"tasks"},
		Summary: "Create a task", DefaultStatus: http.StatusCreated, Security: bearer, MaxBodyBytes: maxBodySetting,
		Errors: []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}, h.create)
	huma.Register(api, huma.Operation{
		OperationID: "list-tasks", Method: http.MethodGet, Path: "/tasks", Tags: []string{"tasks"},
		Summary: "List tasks", Security: bearer,
		Description: "Newest first, one page at a time: pass next_cursor back as cursor for the next page.",
		Errors:      []int{http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}, h.list)
	huma.Register(api, huma.Operation{
		OperationID: "get-task", Method: http.MethodGet, Path: "/tasks/{id}", Tags: []string{"tasks"},
		Summary: "Get a task", Security: bearer,
		Errors: []int{http.StatusNotFound, http.StatusServiceUnavailable},
	}, h.get)
	huma.Register(api, huma.Operation{
		OperationID: "update-task", Method: http.MethodPatch, Path: "/tasks/{id}", Tags: []string{"tasks"},
		Summary: "Change a task", Security: bearer,
		Description: "The title may change at any time; kind, payload and max_attempts only while the task is PENDING (409 otherwise).",
		Errors:      []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}, h.update)
	huma.Register(api, huma.Operation{
		OperationID: "delete-task", Method: http.MethodDelete, Path: "/tasks/{id}", Tags: []string{"tasks"},
		Summary: "Delete a task", DefaultStatus: http.StatusNoContent, Security: bearer,
		Description: "Refused with 409 while the task is QUEUED or RUNNING.",
		Errors:      []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable},
	}, h.delete)
	huma.Register(api, huma.Operation{
		OperationID: "run-task", Method: http.MethodPost, Path: "/tasks/{id}/run", Tags: []string{"tasks"},
		Summary: "Run a task in the background", DefaultStatus: http.StatusAccepted, Security: bearer,
		Description: "Queues a PENDING task, or a FAILED or CANCELED one for a new round of attempts; a worker then moves it to RUNNING and DONE or FAILED. " +
			"409 when the task is QUEUED or RUNNING (already in flight) or DONE (a success is final: create a new task to do the work again).",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable},
	}, h.run)
	huma.Register(api, huma.Operation{
		OperationID: "cancel-task", Method: http.MethodPost, Path: "/tasks/{id}/cancel", Tags: []string{"tasks"},
		Summary: "Cancel a task", Security: bearer,
		Description: "A PENDING or QUEUED task is CANCELED at once (200). A RUNNING task's worker is asked to stop the attempt (202, " +
			"cancel_requested is true until the worker records CANCELED). 409 on a finished task.",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable},
	}, h.cancel)

	huma.Register(api, huma.Operation{
		OperationID: "list-dead-letters", Method: http.MethodGet, Path: "/dead-letters", Tags: []string{"dead letters"},
		Summary: "List dead letters", Security: bearer,
		Description: "Tasks that failed their last attempt, newest first. The list lives on the queue; the FAILED tasks themselves stay in the database.",
		Errors:      []int{http.StatusUnprocessableEntity, http.StatusServiceUnavailable},
	}, h.listDeadLetters)
	huma.Register(api, huma.Operation{
		OperationID: "retry-dead-letter", Method: http.MethodPost, Path: "/dead-letters/{id}/retry", Tags: []string{"dead letters"},
		Summary: "Re-drive a dead letter", DefaultStatus: http.StatusAccepted, Security: bearer,
		Description: "Runs the task again (a new round of attempts) and removes the dead letter. 409 if the task is no longer FAILED.",
		Errors:      []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable},
	}, h.retryDeadLetter)
	huma.Register(api, huma.Operation{
		OperationID: "discard-dead-letter", Method: http.MethodDelete, Path: "/dead-letters/{id}", Tags: []string{"dead letters"},
		Summary: "Discard a dead letter", DefaultStatus: http.StatusNoContent, Security: bearer,
		Description: "Removes the dead letter; the FAILED task stays.",
		Errors:      []int{http.StatusNotFound, http.StatusServiceUnavailable},
	}, h.discardDeadLetter)
}

type handlers struct {
	svc     Service
	readier Readier
	cfg     Config
}

// Readier is what the probes need: a check of the dependencies.
type Readier interface {
	Ready(ctx context.Context) error
}

func (h *handlers) registerProbes(api huma.API) {
	huma.Register(api, huma.Operation{
		OperationID: "health", Method: http.MethodGet, Path: "/health", Tags: []string{"probes"},
		Summary:     "Liveness",
		Description: "Answers without touching any dependency: the process is serving.",
	}, h.health)
	huma.Register(api, huma.Operation{
		OperationID: "ready", Method: http.MethodGet, Path: "/ready", Tags: []string{"probes"},
		Summary:     "Readiness",
		Description: "Checks the database and the queue with a short timeout; 503 when either is down.",
		Errors:      []int{http.StatusServiceUnavailable},
	}, h.ready)
}

// NewProbes returns a handler with only /health and /ready, answering as
// the API's do: for processes that serve no API, such as a worker.
func NewProbes(r Readier, cfg Config) http.Handler {
	cfg.setDefaults()
	hc := NewConfig()
	hc.OpenAPIPath, hc.DocsPath, hc.SchemasPath = "", "", ""
	mux := http.NewServeMux()
	h := &handlers{readier: r, cfg: cfg}
	h.registerProbes(humago.New(mux, hc))
	return withProblemFallback(mux)
}

type statusBody struct {
	Body struct {
		Status string `json:"status" example:"ok"`
	}
}

func (h *handlers) health(context.Context, *struct{}) (*statusBody, error) {
	out := &statusBody{}
	out.Body.Status = "ok"
	return out, nil
}

func (h *handlers) ready(ctx context.Context, _ *struct{}) (*statusBody, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ReadyTimeout)
	defer cancel()
	if err := h.readier.Ready(ctx); err != nil {
		h.cfg.Logger.WarnContext(ctx, "not ready", "error", err)
		// Say which dependency, not its address or credentials.
		what := "a dependency"
		var nr *lifecycle.NotReadyError
		if errors.As(err, &nr) {
			what = "the " + nr.Component
		}
		return nil, huma.Error503ServiceUnavailable("not ready: " + what + " is unavailable")
	}
	out := &statusBody{}
	out.Body.Status = "ok"
	return out, nil
}

type taskOutput struct {
	Body Task
}

type createInput struct {
	Body CreateTaskBody
}

type createOutput struct {
	Location string `header:"Location"`
	Body     Task
}

func (h *handlers) create(ctx context.Context, in *createInput) (*createOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	t, err := h.svc.Create(ctx, task.Spec{
		Title:       in.Body.Title,
		Kind:        in.Body.Kind,
		Payload:     []byte(in.Body.Payload),
		MaxAttempts: in.Body.MaxAttempts,
	})
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	return &createOutput{Location: "/tasks/" + t.ID, Body: fromTask(t)}, nil
}

type listInput struct {
	Status string `query:"status" enum:"PENDING,QUEUED,RUNNING,DONE,FAILED,CANCELED" doc:"Only tasks in this status."`
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50" doc:"Page size."`
	Cursor string `query:"cursor" maxLength:"200" doc:"next_cursor from the previous page."`
}

type listOutput struct {
	Body struct {
		Items      []Task `json:"items"`
		NextCursor string `json:"next_cursor,omitempty" doc:"Pass as cursor to get the next page; absent on the last page."`
	}
}

func (h *handlers) list(ctx context.Context, in *listInput) (*listOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	after, limit, err := pageParams(in.Cursor, in.Limit)
	if err != nil {
		return nil, err
	}
	page, err := h.svc.List(ctx, ports.ListQuery{Status: task.Status(in.Status), After: after, Limit: limit})
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	out := &listOutput{}
	out.Body.Items = make([]Task, 0, len(page.Tasks))
	for _, t := range page.Tasks {
		out.Body.Items = append(out.Body.Items, fromTask(t))
	}
	out.Body.NextCursor = encodeCursor(page.Next)
	return out, nil
}

// idPattern is what task and dead-letter ids look like: checked before any
// lookup, so bytes a database refuses (NUL) never reach one.
const idPattern = `^[A-Za-z0-9._:-]{1,64}$`

var validID = regexp.MustCompile(idPattern)

type idInput struct {
	ID string `path:"id" maxLength:"64" pattern:"^[A-Za-z0-9._:-]{1,64}$" doc:"Task id."`
}

func (h *handlers) get(ctx context.Context, in *idInput) (*taskOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	t, err := h.svc.Get(ctx, in.ID)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	return &taskOutput{Body: fromTask(t)}, nil
}

type updateInput struct {
	ID   string `path:"id" maxLength:"64" pattern:"^[A-Za-z0-9._:-]{1,64}$"`
	Body PatchTaskBody
}

func (h *handlers) update(ctx context.Context, in *updateInput) (*taskOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	p := task.Patch{Title: in.Body.Title, Kind: in.Body.Kind, MaxAttempts: in.Body.MaxAttempts}
	if in.Body.Payload != nil {
		p.Payload = []byte(in.Body.Payload)
	}
	if p.Empty() {
		return nil, huma.Error422UnprocessableEntity("nothing to change: give at least one of title, kind, payload, max_attempts")
	}
	t, err := h.svc.Update(ctx, in.ID, p)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	return &taskOutput{Body: fromTask(t)}, nil
}

func (h *handlers) delete(ctx context.Context, in *idInput) (*struct{}, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	if err := h.svc.Delete(ctx, in.ID); err != nil {
		return nil, h.problem(ctx, err)
	}
	return nil, nil
}

func (h *handlers) run(ctx context.Context, in *idInput) (*taskOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	t, err := h.svc.Run(ctx, in.ID)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	return &taskOutput{Body: fromTask(t)}, nil
}

type cancelOutput struct {
	Status int
	Body   Task
}

func (h *handlers) cancel(ctx context.Context, in *idInput) (*cancelOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	t, err := h.svc.Cancel(ctx, in.ID)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	out := &cancelOutput{Status: http.StatusOK, Body: fromTask(t)}
	if t.Status == task.Running {
		out.Status = http.StatusAccepted
	}
	return out, nil
}

type deadLettersInput struct {
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50"`
	Cursor string `query:"cursor" maxLength:"200" doc:"next_cursor from the previous page."`
}

type deadLettersOutput struct {
	Body struct {
		Items      []DeadLetter `json:"items"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}
}

func (h *handlers) listDeadLetters(ctx context.Context, in *deadLettersInput) (*deadLettersOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	after, limit, err := pageParams(in.Cursor, in.Limit)
	if err != nil {
		return nil, err
	}
	letters, next, err := h.svc.DeadLetters(ctx, after, limit)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	out := &deadLettersOutput{}
	out.Body.Items = make([]DeadLetter, 0, len(letters))
	for _, d := range letters {
		out.Body.Items = append(out.Body.Items, fromDeadLetter(d))
	}
	out.Body.NextCursor = encodeCursor(next)
	return out, nil
}

type deadLetterIDInput struct {
	ID string `path:"id" maxLength:"64" pattern:"^[A-Za-z0-9._:-]{1,64}$" doc:"Dead letter id."`
}

func (h *handlers) retryDeadLetter(ctx context.Context, in *deadLetterIDInput) (*taskOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	t, err := h.svc.RetryDeadLetter(ctx, in.ID)
	if err != nil {
		return nil, h.problem(ctx, err)
	}
	return &taskOutput{Body: fromTask(t)}, nil
}

func (h *handlers) discardDeadLetter(ctx context.Context, in *deadLetterIDInput) (*struct{}, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	if err := h.svc.DiscardDeadLetter(ctx, in.ID); err != nil {
		return nil, h.problem(ctx, err)
	}
	return nil, nil
}

// problem maps an error from the core or a port to its HTTP problem.
func (h *handlers) problem(ctx context.Context, err error) error {
	p := problemFor(err)
	if p.GetStatus() >= 500 {
		h.cfg.Logger.ErrorContext(ctx, "request failed", "status", p.GetStatus(), "error", err)
	}
	return p
}

func problemFor(err error) huma.StatusError {
	var verr *task.ValidationError
	switch {
	case errors.As(err, &verr):
		return huma.Error422UnprocessableEntity("invalid task", &huma.ErrorDetail{
			Location: "body." + verr.Field, Message: verr.Reason,
		})
	case errors.Is(err, task.ErrNotFound):
		return huma.Error404NotFound(err.Error())
	case errors.Is(err, ports.ErrNotFound):
		return huma.Error404NotFound("dead letter not found")
	case errors.Is(err, lifecycle.ErrNoDeadLetters):
		return huma.Error501NotImplemented(err.Error())
	case errors.Is(err, task.ErrIllegalTransition):
		return huma.Error409Conflict(err.Error())
	case errors.Is(err, ports.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return huma.Error503ServiceUnavailable("a backing service is unavailable; try again shortly")
	default:
		return huma.Error500InternalServerError("internal error")
	}
}

// pageParams reads the cursor and limit of a listing.
func pageParams(cursor string, limit int) (after string, n int, err error) {
	after, err = decodeCursor(cursor)
	if err != nil {
		return "", 0, huma.Error422UnprocessableEntity("invalid cursor", &huma.ErrorDetail{
			Location: "query.cursor", Message: "not a cursor returned by this API", Value: cursor,
		})
	}
	if limit == 0 {
		limit = DefaultPageSize
	}
	return after, limit, nil
}

// Cursors are opaque to clients: they are the last id of a page, encoded so
// nobody builds them by hand and the format can change.
func encodeCursor(after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(after))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !validID.Match(b) {
		return "", errors.New("invalid cursor")
	}
	return string(b), nil
}
