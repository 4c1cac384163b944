/*
 * init for Iglunix images: the first program the kernel runs (PID 1).
 *
 * It mounts /proc, /sys and /dev (the Debian cloud kernel does not mount
 * devtmpfs by itself, so the console is reopened once /dev exists), sets the
 * host name, prints the boot marker that `iglubuild boot` waits for, then
 * either runs the command given as iglubuild.run="..." on the kernel command
 * line (or iglubuild.runhex=HEX, for commands with quotes in them) or starts
 * a shell on the console. When that finishes, or when it gets
 * SIGUSR2 (busybox poweroff) / SIGTERM (reboot), it syncs and powers off.
 * Only libc is used, so it builds without kernel headers.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BOOT_MARKER "IGLUNIX BOOT OK"
#define SHELL_MARKER "IGLUNIX SHELL READY"
#define RUN_BEGIN "IGLUNIX-RUN-BEGIN"
#define RUN_END "IGLUNIX-RUN-END"
#define RUN_PARAM "iglubuild.run="
#define RUN_HEX_PARAM "iglubuild.runhex="

static volatile sig_atomic_t stop_how;

static void on_signal(int sig) { stop_how = sig; }

static void try_mount(const char *src, const char *dst, const char *type, unsigned long flags)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, NULL) != 0 && errno != EBUSY)
		fprintf(stderr, "init: mount %s on %s: %s\n", type, dst, strerror(errno));
}

static void open_console(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		return;
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2)
		close(fd);
}

static void set_hostname(void)
{
	char name[65] = {0};
	FILE *f = fopen("/etc/hostname", "r");
	if (!f)
		return;
	if (fgets(name, sizeof name, f)) {
		name[strcspn(name, "\r\n")] = 0;
		if (*name)
			sethostname(name, strlen(name));
	}
	fclose(f);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Find `param` at the start of a word in `line`; return its value or NULL. */
static char *param_value(char *line, const char *param)
{
	char *p;
	for (p = line; (p = strstr(p, param)); p++)
		if (p == line || p[-1] == ' ')
			return p + strlen(param);
	return NULL;
}

/*
 * The command from iglubuild.run="..." (or iglubuild.run=word) or from
 * iglubuild.runhex=HEX (each byte as two hex digits), or NULL.
 */
static char *run_command(void)
{
	static char line[4096];
	static char decoded[2048];
	char *p, *end;
	size_t n = 0;
	FILE *f = fopen("/proc/cmdline", "r");
	if (!f)
		return NULL;
	if (!fgets(line, sizeof line, f)) {
		fclose(f);
		return NULL;
	}
	fclose(f);
	if ((p = param_value(line, RUN_HEX_PARAM))) {
		while (n + 1 < sizeof decoded && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
			decoded[n++] = (char)(hexval(p[0]) * 16 + hexval(p[1]));
			p += 2;
		}
		decoded[n] = 0;
		return decoded;
	}
	if ((p = param_value(line, RUN_PARAM))) {
		if (*p == '"') {
			p++;
			end = strchr(p, '"');
		} else {
			end = p + strcspn(p, " \n");
		}
		if (end)
			*end = 0;
		return p;
	}
	return NULL;
}

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setsid();
		execv(argv[0], argv);
		fprintf(stderr, "init: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* Reap every child until `child` exits or a shutdown signal arrives. */
static int wait_for(pid_t child)
{
	int status = 0;
	for (;;) {
		pid_t pid = waitpid(-1, &status, 0);
		if (pid == child)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (pid < 0 && errno == EINTR && stop_how)
			return -1;
		if (pid < 0 && errno == ECHILD)
			return -1;
	}
}

int main(void)
{
	char *cmd;
	pid_t child;
	int status;

	signal(SIGUSR2, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
	try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
	try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID);
	open_console();
	setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "linux", 0);
	chdir("/");
	set_hostname();
	printf("\n" BOOT_MARKER "\n");
	fflush(stdout);

	cmd = run_command();
	if (cmd) {
		char *argv[] = {"/bin/sh", "-c", cmd, NULL};
		printf(RUN_BEGIN "\n");
		fflush(stdout);
		status = wait_for(spawn(argv));
		printf(RUN_END " status=%d\n", status);
	} else {
		char *argv[] = {"/bin/sh", "-i", NULL};
		printf(SHELL_MARKER "\n");
		fflush(stdout);
		child = spawn(argv);
		wait_for(child);
	}
	fflush(stdout);
	sync();
	reboot(stop_how == SIGTERM ? RB_AUTOBOOT : RB_POWER_OFF);
	return 0;
}
