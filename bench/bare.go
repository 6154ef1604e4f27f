package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/opsbox/opsbox/core/lifecycle"
)

// The bare handler is the API section's baseline: POST /tasks, GET
// /tasks/{id} and GET /health written with nothing but net/http, encoding/
// json and pgx, issuing the same SQL as the opsbox store (every column of
// the tasks row, one INSERT or one SELECT by id). The difference between
// it and the real API is what Huma, bun, database/sql, the core's
// validation and the metrics middleware cost. It runs as a process of its
// own (`bench serve-bare`, the benchmark re-executing itself), as the api
// binary does, so both pay for their own runtime and neither shares one
// with the load generator.

// bareColumns are the tasks columns, in the order bun writes them.
const bareColumns = `id, title, kind, payload, status, attempts, max_attempts, created_at, updated_at,
	started_at, finished_at, result, error, available_at, enqueued_at, heartbeat_at, cancel_requested, history`

const (
	bareInsert = `INSERT INTO tasks (` + bareColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`
	bareSelect = `SELECT ` + bareColumns + ` FROM tasks WHERE id = $1`
)

// bareTask is the JSON shape of a task, as the API writes it.
type bareTask struct {
	ID              string          `json:"id"`
	Title           string          `json:"title"`
	Kind            string          `json:"kind"`
	Payload         json.RawMessage `json:"payload"`
	Status          string          `json:"status"`
	Attempts        int             `json:"attempts"`
	MaxAttempts     int             `json:"max_attempts"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
	StartedAt       *time.Time      `json:"started_at,omitempty"`
	FinishedAt      *time.Time      `json:"finished_at,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           string          `json:"error,omitempty"`
	AvailableAt     *time.Time      `json:"available_at,omitempty"`
	CancelRequested bool            `json:"cancel_requested,omitempty"`
	History         json.RawMessage `json:"history"`
}

type bareCreate struct {
	Title       string          `json:"title"`
	Kind        string          `json:"kind"`
	Payload     json.RawMessage `json:"payload"`
	MaxAttempts int             `json:"max_attempts"`
}

type bareServer struct {
	pool *pgxpool.Pool
	ids  lifecycle.UUIDv7
}

func (s *bareServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("POST /tasks", s.create)
	mux.HandleFunc("GET /tasks/{id}", s.get)
	return mux
}

func (s *bareServer) create(w http.ResponseWriter, r *http.Request) {
	var in bareCreate
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
		http.Error(w, `{"detail":"invalid body"}`, http.StatusBadRequest)
		return
	}
	// The checks of task.New and the simulate kind, roughly: enough that
	// the bare handler is not let off doing any work the real one does.
	in.Title = strings.TrimSpace(in.Title)
	if in.Kind == "" {
		in.Kind = "simulate"
	}
	if in.MaxAttempts == 0 {
		in.MaxAttempts = 3
	}
	payload := bytes.TrimSpace(in.Payload)
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		payload = []byte("{}")
	}
	if in.Title == "" || utf8.RuneCountInString(in.Title) > 200 || in.Kind != "simulate" ||
		in.MaxAttempts < 1 || in.MaxAttempts > 25 || payload[0] != '{' || len(payload) > 64<<10 {
		http.Error(w, `{"detail":"invalid task"}`, http.StatusUnprocessableEntity)
		return
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	t := bareTask{
		ID: s.ids.NewID(), Title: in.Title, Kind: in.Kind, Payload: payload, Status: "PENDING",
		MaxAttempts: in.MaxAttempts, CreatedAt: now, UpdatedAt: now, History: json.RawMessage("[]"),
	}
	_, err := s.pool.Exec(r.Context(), bareInsert, t.ID, t.Title, t.Kind, string(t.Payload), t.Status, 0, t.MaxAttempts,
		now, now, nil, nil, nil, "", now, nil, nil, false, "[]")
	if err != nil {
		http.Error(w, `{"detail":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Location", "/tasks/"+t.ID)
	writeJSON(w, http.StatusCreated, &t)
}

func (s *bareServer) get(w http.ResponseWriter, r *http.Request) {
	var t bareTask
	var payload, history string
	var result *string
	var availableAt, enqueuedAt, heartbeatAt *time.Time
	err := s.pool.QueryRow(r.Context(), bareSelect, r.PathValue("id")).Scan(&t.ID, &t.Title, &t.Kind, &payload, &t.Status,
		&t.Attempts, &t.MaxAttempts, &t.CreatedAt, &t.UpdatedAt, &t.StartedAt, &t.FinishedAt, &result, &t.Error,
		&availableAt, &enqueuedAt, &heartbeatAt, &t.CancelRequested, &history)
	if errors.Is(err, pgx.ErrNoRows) {
		http.Error(w, `{"detail":"task not found"}`, http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, `{"detail":"internal error"}`, http.StatusInternalServerError)
		return
	}
	t.Payload, t.History = json.RawMessage(payload), json.RawMessage(history)
	if result != nil {
		t.Result = json.RawMessage(*result)
	}
	if t.Status == "QUEUED" {
		t.AvailableAt = availableAt
	}
	writeJSON(w, http.StatusOK, &t)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"detail":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveBare is `bench serve-bare -addr A -database-url U`: the bare
// handler until SIGTERM. Its pool holds at most 20 connections, as the
// api's does by default.
func serveBare(args []string) error {
	fs := flag.NewFlagSet("serve-bare", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of a migrated opsbox database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := pgxpool.ParseConfig(*dbURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: (&bareServer{pool: pool}).routes(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
