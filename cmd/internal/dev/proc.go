package dev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process of `jisr dev --cluster`: a hub node or a gateway
// replica, each a jisr command of its own, so that it can be killed alone.
type Proc struct {
	Name string
	Exe  string
	Args []string
	Env  []string
	Log  string // its stdout and stderr go to this file

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// reported: jisr dev has logged that it exited.
	reported bool
}

// Start runs the process (again, after it exited or was killed).
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is already running", p.Name)
		}
	}
	lf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Exe, p.Args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.Env, lf, lf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); lf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// PID is the running process's id (0 if none).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL (kill -9) and waits for the process to exit.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to grace, then kills.
func (p *Proc) Stop(grace time.Duration) error { return p.signal(syscall.SIGTERM, grace) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if sig == syscall.SIGKILL {
		<-done
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within %s: killed", p.Name, grace)
	}
}
