package netsim

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	errBusy := errors.New("not yet")
	errGone := errors.New("exited")
	tests := []struct {
		name      string
		results   []error // returned by successive calls; the last repeats
		wantErr   error
		wantCalls int
	}{
		{"ready at once", []error{nil}, nil, 1},
		{"ready on the third try", []error{errBusy, errBusy, nil}, nil, 3},
		{"permanent error stops polling", []error{errBusy, permanent{errGone}}, errGone, 2},
		{"timeout returns the last error", []error{errBusy}, errBusy, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := poll(context.Background(), 50*time.Millisecond, time.Millisecond, func() error {
				r := tt.results[min(calls, len(tt.results)-1)]
				calls++
				return r
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if _, isPerm := err.(permanent); isPerm {
				t.Errorf("poll returned the permanent wrapper, want the cause")
			}
			if tt.wantCalls >= 0 && calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
		})
	}
}
