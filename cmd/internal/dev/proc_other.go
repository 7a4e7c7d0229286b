//go:build !linux

package dev

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }
