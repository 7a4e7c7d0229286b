package dev

import "syscall"

// childAttr kills a child when jisr dev dies, even by SIGKILL.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
