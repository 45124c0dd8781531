/* The pod sandbox's pause process: sleeps until told to stop. Built static with musl-gcc because
 * the cluster cannot pull registry.k8s.io/pause. */
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/wait.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	signal(SIGCHLD, reap);
	for (;;) pause();
}
