"""Executors: where build phases run (host, chroot, docker), behind iglubuild.executor."""
