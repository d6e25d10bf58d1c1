/*
 * A Kafka-protocol broker for tests: librdkafka's mock cluster (Debian package librdkafka-dev).
 * Usage: kafka-mock [topic[:partitions] ...]
 * Prints the bootstrap address (host:port) on one line, then runs until stdin closes,
 * SIGTERM or SIGINT. Topics are created up front (the mock does not implement CreateTopics);
 * more can be created later by writing `create <topic> <partitions>` lines to stdin, each
 * answered on stdout with `created <topic>` or `error <topic> <reason>`; an
 * `errors <api key> <count> <error code>` line makes the broker answer the next <count> requests
 * of that API (0: Produce) with that Kafka error code, answered with `pushed <count>`.
 * Metadata is offered up to v4, so that clients send AllowAutoTopicCreation (the test proxy
 * clears it: no topic springs into existence because a client asked for it).
 * Build: gcc -O2 -o kafka-mock kafka-mock.c $(pkg-config --cflags --libs rdkafka)
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Metadata's API key. The mock advertises v0-v2 but its handler reads and writes the
 * non-flexible versions up to v8; v3 adds throttle_time_ms, v4 allow_auto_topic_creation. */
#define API_METADATA 3

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static rd_kafka_resp_err_t create_topic(rd_kafka_mock_cluster_t *mc, const char *name, int partitions) {
  return rd_kafka_mock_topic_create(mc, name, partitions > 0 ? partitions : 1, 1);
}

/* One stdin line: `create <topic> <partitions>` or `errors <api key> <count> <error code>`. */
static void command(rd_kafka_mock_cluster_t *mc, char *line) {
  char name[256];
  int partitions = 1;
  int api = 0, code = 0, count = 0;
  if (sscanf(line, "errors %d %d %d", &api, &count, &code) == 3) {
    for (int i = 0; i < count; i++) rd_kafka_mock_push_request_errors(mc, api, 1, (rd_kafka_resp_err_t)code);
    printf("pushed %d\n", count);
  } else if (sscanf(line, "create %255s %d", name, &partitions) < 1) {
    printf("error - unknown command\n");
  } else {
    rd_kafka_resp_err_t err = create_topic(mc, name, partitions);
    if (err) printf("error %s %s\n", name, rd_kafka_err2str(err));
    else printf("created %s\n", name);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!rk) { fprintf(stderr, "kafka-mock: %s\n", errstr); return 1; }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
  if (!mc) { fprintf(stderr, "kafka-mock: cannot create mock cluster\n"); return 1; }
  rd_kafka_resp_err_t verr = rd_kafka_mock_set_apiversion(mc, API_METADATA, 0, 4);
  if (verr) { fprintf(stderr, "kafka-mock: Metadata v4: %s\n", rd_kafka_err2str(verr)); return 1; }
  for (int i = 1; i < argc; i++) {
    char name[256];
    int partitions = 1;
    snprintf(name, sizeof name, "%s", argv[i]);
    char *colon = strchr(name, ':');
    if (colon) { *colon = '\0'; partitions = atoi(colon + 1); }
    rd_kafka_resp_err_t err = create_topic(mc, name, partitions);
    if (err) { fprintf(stderr, "kafka-mock: topic %s: %s\n", name, rd_kafka_err2str(err)); return 1; }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  fflush(stdout);
  char buf[1024];
  size_t used = 0;
  while (!stopping) {
    struct pollfd p = { .fd = 0, .events = POLLIN };
    int n = poll(&p, 1, 200);
    if (n <= 0) continue;
    ssize_t got = read(0, buf + used, sizeof buf - 1 - used);
    if (got <= 0) break; /* stdin closed */
    used += (size_t)got;
    buf[used] = '\0';
    char *start = buf, *nl;
    while ((nl = strchr(start, '\n'))) {
      *nl = '\0';
      command(mc, start);
      start = nl + 1;
    }
    used = strlen(start);
    memmove(buf, start, used);
    if (used == sizeof buf - 1) used = 0; /* a line longer than the buffer: dropped */
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
