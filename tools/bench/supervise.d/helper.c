// The precise parts of tools/bench/supervise: children that timestamp themselves and drivers
// that time signals, stops and reaping. One binary, one mode per first argument; compiled by the
// bench into its temporary directory with `cc -O2`. Timestamps are CLOCK_MONOTONIC nanoseconds.
//
// Invoked as `run` (the run file of an s6 or runit service directory is a symlink to this
// binary) or with no argument, it takes its arguments from the environment variable SB_ARGS
// (space-separated).
//
//   restart-init FILE N          create FILE, the shared record of N restarts
//   restart-child FILE           record start; exit(1) right away, or pause once N are recorded
//   restart-report FILE [count]  print "count" only, or the latencies (ns) and a summary
//   sigbench N SECONDS FIFO -- INIT ARGV...
//                                start INIT (whose command is `sigchild FIFO`), then N times:
//                                t0, kill(INIT, SIGUSR1), wait for the child's handler stamp t1;
//                                print t1 - t0 (ns) per line
//   sigchild FIFO                stamp each SIGUSR1 and send the stamp through FIFO
//   ignoreterm PIDFILE           ignore SIGTERM, write our pid to PIDFILE, pause
//   stopwatch PID SECONDS signal TARGET SIG | fifo PATH TEXT | exec ARGV...
//                                t0, do the action, wait (pidfd) for PID to die: print t1 - t0
//   orphans N RESULT [POLL_CPU [trace]]
//                                make N orphans that block on a barrier, release it, and poll
//                                until none of them exists any more; write the time to RESULT;
//                                with trace, also when the last one had exited (a zombie);
//                                and the CPU time PID 1 used meanwhile
// Every child mode arms alarm(600): nothing it starts outlives a broken run for long.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char* what) {
  fprintf(stderr, "helper: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int write_all(int fd, const void* buf, size_t len) {
  const char* p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

// Reads exactly len bytes within timeout_ms; 0 on success, -1 on timeout, EOF or error.
static int read_timed(int fd, void* buf, size_t len, int timeout_ms) {
  char* p = buf;
  uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
  while (len > 0) {
    uint64_t t = now_ns();
    if (t >= deadline) return -1;
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)((deadline - t) / 1000000u) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void write_pidfile(const char* path) {
  char tmp[4096], text[32];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open pid file");
  int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
  if (write_all(fd, text, (size_t)n) != 0) die("write pid file");
  close(fd);
  if (rename(tmp, path) != 0) die("rename pid file");
}

// --- restarts ----------------------------------------------------------------------------
// FILE: a header, then start[N + 1] and exit[N + 1]. Child i stamps start[i] first thing; the
// first N children stamp exit[i] right before _exit(1); child N pauses (its pid in the header).
struct record {
  uint64_t count;   // children that have exited
  uint64_t n;       // restarts wanted
  uint64_t paused;  // pid of child N, once it runs
  uint64_t pad;
  uint64_t stamps[];  // start[0..n], then exit[0..n]
};

static size_t record_size(uint64_t n) { return sizeof(struct record) + 2 * (n + 1) * 8; }

static struct record* map_record(const char* path, int flags) {
  int fd = open(path, flags);
  if (fd < 0) die("open record");
  struct stat st;
  if (fstat(fd, &st) != 0) die("stat record");
  void* p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap record");
  close(fd);
  return p;
}

static int restart_init(const char* path, uint64_t n) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("create record");
  if (ftruncate(fd, (off_t)record_size(n)) != 0) die("size record");
  close(fd);
  struct record* r = map_record(path, O_RDWR);
  r->n = n;
  return 0;
}

static int restart_child(const char* path) {
  const uint64_t t0 = now_ns();
  struct record* r = map_record(path, O_RDWR);
  const uint64_t i = r->count;
  if (i > r->n) _exit(3);
  r->stamps[i] = t0;
  if (i == r->n) {
    r->paused = (uint64_t)getpid();
    alarm(600);
    for (;;) pause();
  }
  r->count = i + 1;
  r->stamps[r->n + 1 + i] = now_ns();
  _exit(1);
}

static int restart_report(const char* path, int count_only) {
  struct record* r = map_record(path, O_RDWR);
  const uint64_t n = r->n, count = r->count;
  if (count_only) {
    printf("%llu %llu\n", (unsigned long long)count, (unsigned long long)r->paused);
    return 0;
  }
  // Latency i: from child i's exit stamp to child i+1's start stamp (only when both exist).
  uint64_t samples = 0;
  for (uint64_t i = 0; i < count && i < n; ++i) {
    const uint64_t next = r->stamps[i + 1], exited = r->stamps[n + 1 + i];
    if (next == 0 || exited == 0 || next < exited) continue;
    printf("%llu\n", (unsigned long long)(next - exited));
    ++samples;
  }
  const uint64_t last = count < n ? count : n;
  const uint64_t span = r->stamps[last] > r->stamps[0] ? r->stamps[last] - r->stamps[0] : 0;
  fprintf(stderr, "restarts=%llu span_ns=%llu\n", (unsigned long long)samples,
          (unsigned long long)span);
  return 0;
}

// --- signal forwarding -------------------------------------------------------------------
static int sig_fd = -1;

static void on_usr1(int sig) {
  (void)sig;
  const int saved = errno;
  const uint64_t t = now_ns();
  (void)!write(sig_fd, &t, sizeof t);
  errno = saved;
}

__attribute__((noreturn)) static int sigchild(const char* fifo) {
  alarm(600);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGUSR1, &sa, NULL) != 0) die("sigaction");
  sig_fd = open(fifo, O_WRONLY);
  if (sig_fd < 0) die("open fifo");
  const uint64_t ready = (uint64_t)getpid();
  if (write_all(sig_fd, &ready, sizeof ready) != 0) die("write fifo");
  for (;;) pause();
}

// Waits up to timeout_ms for PID (our child) to exit; SIGKILL after that.
static void reap_within(pid_t pid, int timeout_ms) {
  const uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
  while (now_ns() < deadline) {
    pid_t r = waitpid(pid, NULL, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return;
    sleep_ns(5000000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static int sigbench(long n, long seconds, const char* fifo, char** init_argv) {
  unlink(fifo);
  if (mkfifo(fifo, 0600) != 0) die("mkfifo");
  // O_RDWR: never EOF, and poll's timeout works while no writer has come yet.
  int fd = open(fifo, O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open fifo");
  pid_t init = fork();
  if (init < 0) die("fork");
  if (init == 0) {
    execvp(init_argv[0], init_argv);
    _exit(127);
  }
  uint64_t child = 0;
  if (read_timed(fd, &child, sizeof child, 10000) != 0) {
    fprintf(stderr, "sigbench: %s: the child never became ready\n", init_argv[0]);
    kill(init, SIGKILL);
    waitpid(init, NULL, 0);
    return 1;
  }
  sleep_ns(200000000);  // let the init settle
  const uint64_t deadline = now_ns() + (uint64_t)seconds * 1000000000u;
  long lost = 0, done = 0;
  for (long i = 0; i < n && now_ns() < deadline; ++i) {
    const uint64_t t0 = now_ns();
    kill(init, SIGUSR1);
    uint64_t t1 = 0;
    if (read_timed(fd, &t1, sizeof t1, 2000) != 0) {
      ++lost;
      if (lost >= 3) break;
      continue;
    }
    printf("%llu\n", (unsigned long long)(t1 - t0));
    ++done;
    sleep_ns(200000);  // 200 µs apart: no back-to-back pile-up
  }
  fflush(stdout);
  fprintf(stderr, "sigbench: %s: %ld samples, %ld lost\n", init_argv[0], done, lost);
  kill(init, SIGTERM);
  reap_within(init, 5000);
  if (child > 1 && kill((pid_t)child, 0) == 0) kill((pid_t)child, SIGKILL);
  unlink(fifo);
  return lost > 0 ? 1 : 0;
}

// --- stop --------------------------------------------------------------------------------
__attribute__((noreturn)) static int ignoreterm(const char* pidfile) {
  alarm(600);
  signal(SIGTERM, SIG_IGN);
  write_pidfile(pidfile);
  for (;;) pause();
}

static int stopwatch(pid_t target, long seconds, char** action) {
  int pidfd = (int)syscall(SYS_pidfd_open, target, 0);
  if (pidfd < 0) die("pidfd_open");
  pid_t helper = 0;
  const uint64_t t0 = now_ns();
  if (strcmp(action[0], "signal") == 0) {
    if (kill((pid_t)atol(action[1]), atoi(action[2])) != 0) die("kill");
  } else if (strcmp(action[0], "fifo") == 0) {
    int fd = open(action[1], O_WRONLY | O_NONBLOCK);
    if (fd < 0 || write_all(fd, action[2], strlen(action[2])) != 0) die("write control fifo");
    close(fd);
  } else if (strcmp(action[0], "exec") == 0) {
    helper = fork();
    if (helper < 0) die("fork");
    if (helper == 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      execvp(action[1], action + 1);
      _exit(127);
    }
  } else {
    fprintf(stderr, "stopwatch: unknown action %s\n", action[0]);
    return 2;
  }
  struct pollfd pfd = {pidfd, POLLIN, 0};
  int r;
  do r = poll(&pfd, 1, (int)(seconds * 1000)); while (r < 0 && errno == EINTR);
  const uint64_t t1 = now_ns();
  if (helper > 0) reap_within(helper, 10000);
  if (r <= 0) {
    printf("timeout\n");
    return 1;
  }
  printf("%llu\n", (unsigned long long)(t1 - t0));
  return 0;
}

// --- orphans -----------------------------------------------------------------------------
// Zombies in this PID namespace (state Z in /proc/*/stat).
static int count_zombies(void) {
  DIR* d = opendir("/proc");
  if (!d) return -1;
  int zombies = 0;
  struct dirent* e;
  char path[300], buf[512];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    char* close_paren = strrchr(buf, ')');
    if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z') ++zombies;
  }
  closedir(d);
  return zombies;
}

// CPU time PID 1 (all its threads) has used so far, from /proc/1/task/*/schedstat.
static uint64_t init_cpu_ns(void) {
  DIR* d = opendir("/proc/1/task");
  if (!d) return 0;
  uint64_t total = 0;
  struct dirent* e;
  char path[300], buf[128];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/1/task/%s/schedstat", e->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    total += strtoull(buf, NULL, 10);
  }
  closedir(d);
  return total;
}

// True once PID has exited: a zombie, or gone (reaped already).
static int exited(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 1;
  buf[n] = 0;
  char* close_paren = strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

static int orphans(long n, const char* result, int poll_cpu, int trace) {
  alarm(600);
  FILE* out = fopen(result, "w");
  if (!out) die("open result");
  int barrier[2], ready[2];
  if (pipe(barrier) != 0 || pipe(ready) != 0) die("pipe");
  pid_t middle = fork();
  if (middle < 0) die("fork");
  if (middle == 0) {
    close(ready[0]);
    for (long k = 0; k < n; ++k) {
      pid_t g = fork();
      if (g < 0) _exit(1);
      if (g == 0) {
        close(barrier[1]);
        const int32_t me = (int32_t)getpid();
        (void)!write(ready[1], &me, sizeof me);
        close(ready[1]);
        char c;
        while (read(barrier[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
      }
    }
    _exit(0);  // the grandchildren are orphans now: PID 1 adopts them
  }
  close(barrier[0]);
  close(ready[1]);
  int32_t* pids = calloc((size_t)n, sizeof *pids);
  long got = 0;
  while (got < n && read_timed(ready[0], &pids[got], sizeof *pids, 30000) == 0) ++got;
  int status = 0;
  waitpid(middle, &status, 0);
  if (got < n || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(out, "error=only_%ld_of_%ld_orphans\n", got, n);
    fclose(out);
    return 1;
  }
  // Poll from another core, so that polling takes no time from the init and the exiting orphans.
  if (poll_cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(poll_cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  sleep_ns(200000000);
  // Two lists: orphans not yet known to have exited (trace only), and orphans not yet reaped.
  int32_t* running = calloc((size_t)n, sizeof *running);
  memcpy(running, pids, (size_t)n * sizeof *pids);
  long remaining = n, not_exited = trace ? n : 0;
  const uint64_t cpu0 = init_cpu_ns();
  const uint64_t t0 = now_ns();
  close(barrier[1]);  // the release: every orphan's read() returns 0 and it exits
  uint64_t t1 = 0, t_exited = 0;
  while (now_ns() - t0 < 30000000000u) {
    sleep_ns(250000);
    long kept = 0;
    for (long k = 0; k < not_exited; ++k) {
      if (!exited(running[k])) running[kept++] = running[k];
    }
    if (not_exited > 0 && kept == 0) t_exited = now_ns();
    not_exited = kept;
    kept = 0;
    for (long k = 0; k < remaining; ++k) {
      if (kill(pids[k], 0) == 0 || errno != ESRCH) pids[kept++] = pids[k];
    }
    remaining = kept;
    if (remaining == 0) {
      t1 = now_ns();
      if (trace && t_exited == 0) t_exited = t1;
      break;
    }
  }
  sleep_ns(20000000);  // PID 1's CPU time: let it go back to sleep, and its counters settle
  const uint64_t cpu = init_cpu_ns() - cpu0;
  const int zombies = count_zombies();
  if (t1 == 0) {
    fprintf(out, "error=timeout remaining=%ld zombies=%d\n", remaining, zombies);
  } else {
    fprintf(out, "reap_ns=%llu exited_ns=%llu init_cpu_ns=%llu zombies_after=%d\n",
            (unsigned long long)(t1 - t0), (unsigned long long)(t_exited ? t_exited - t0 : 0),
            (unsigned long long)cpu, zombies);
  }
  fclose(out);
  return 0;
}

// --- main --------------------------------------------------------------------------------
int main(int argc, char** argv) {
  char* env_argv[16];
  const char* base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  const char* args = getenv("SB_ARGS");
  // As a service's ./run (s6-supervise may pass arguments of its own): the mode is in SB_ARGS.
  if (argc < 2 || (args && strcmp(base, "run") == 0)) {
    if (!args) {
      fprintf(stderr, "helper: no mode and no SB_ARGS\n");
      return 2;
    }
    char* copy = strdup(args);
    int k = 1;
    env_argv[0] = argv[0];
    for (char* tok = strtok(copy, " "); tok && k < 15; tok = strtok(NULL, " ")) env_argv[k++] = tok;
    env_argv[k] = NULL;
    argc = k;
    argv = env_argv;
  }
  const char* mode = argv[1];
  if (strcmp(mode, "restart-child") == 0 && argc >= 3) return restart_child(argv[2]);
  if (strcmp(mode, "restart-init") == 0 && argc >= 4)
    return restart_init(argv[2], strtoull(argv[3], NULL, 10));
  if (strcmp(mode, "restart-report") == 0 && argc >= 3)
    return restart_report(argv[2], argc >= 4 && strcmp(argv[3], "count") == 0);
  if (strcmp(mode, "sigchild") == 0 && argc >= 3) return sigchild(argv[2]);
  if (strcmp(mode, "sigbench") == 0 && argc >= 7 && strcmp(argv[5], "--") == 0)
    return sigbench(atol(argv[2]), atol(argv[3]), argv[4], argv + 6);
  if (strcmp(mode, "ignoreterm") == 0 && argc >= 3) return ignoreterm(argv[2]);
  if (strcmp(mode, "stopwatch") == 0 && argc >= 6)
    return stopwatch((pid_t)atol(argv[2]), atol(argv[3]), argv + 4);
  if (strcmp(mode, "orphans") == 0 && argc >= 4)
    return orphans(atol(argv[2]), argv[3], argc >= 5 ? atoi(argv[4]) : -1,
                   argc >= 6 && strcmp(argv[5], "trace") == 0);
  fprintf(stderr, "helper: bad arguments (see the comment at the top of helper.c)\n");
  return 2;
}
