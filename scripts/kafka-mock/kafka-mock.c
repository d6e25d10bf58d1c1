/*
 * A Kafka-protocol broker for tests: librdkafka's mock cluster (Debian package librdkafka-dev).
 * Usage: kafka-mock [topic[:partitions] ...]
 * Prints the bootstrap address (host:port) on one line, then runs until stdin closes,
 * SIGTERM or SIGINT. Topics are created up front (the mock does not implement CreateTopics).
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

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  if (!rk) { fprintf(stderr, "kafka-mock: %s\n", errstr); return 1; }
  rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
  if (!mc) { fprintf(stderr, "kafka-mock: cannot create mock cluster\n"); return 1; }
  for (int i = 1; i < argc; i++) {
    char name[256];
    int partitions = 1;
    snprintf(name, sizeof name, "%s", argv[i]);
    char *colon = strchr(name, ':');
    if (colon) { *colon = '\0'; partitions = atoi(colon + 1); }
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, name, partitions > 0 ? partitions : 1, 1);
    if (err) { fprintf(stderr, "kafka-mock: topic %s: %s\n", name, rd_kafka_err2str(err)); return 1; }
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
  fflush(stdout);
  char buf[256];
  while (!stopping) {
    struct pollfd p = { .fd = 0, .events = POLLIN };
    int n = poll(&p, 1, 200);
    if (n > 0 && read(0, buf, sizeof buf) <= 0) break; /* stdin closed */
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
