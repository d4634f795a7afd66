// thaw head, thaw node, thaw cluster init: cluster mode, a head and its nodes as separate
// processes (actors/cluster.hpp).

#include "apps/thaw/commands.hpp"

#include "actors/cluster.hpp"
#include "runtime/common/log.hpp"

#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>

namespace thaw::app {
namespace {

struct head_args {
  common_options common;
  std::string host;
  int port = -1;
  int control_port = -1;
};

struct node_args {
  common_options common;
  std::string head; // HOST:PORT
  std::string name;
};

/// SIGINT and SIGTERM, blocked so that they are taken synchronously; call before any thread
/// starts.
sigset_t block_stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : "SIGTERM";
}

expected<int> run_head(head_args& a) {
  THAW_ASSIGN(auto cfg, a.common.load_config());
  THAW_ASSIGN(auto serve, serve_options::from_config(cfg));
  THAW_ASSIGN(auto cluster, cluster_options::from_config(cfg));
  if (!a.host.empty())
    serve.http.address = a.host;
  if (a.port >= 0)
    serve.http.port = static_cast<std::uint16_t>(a.port);
  if (a.control_port >= 0)
    cluster.port = static_cast<std::uint16_t>(a.control_port);
  auto signals = block_stop_signals();
  THAW_ASSIGN(auto server, head_server::start(serve, cluster));
  // Tests and scripts read this line for the ports.
  std::printf("thaw head: http://%s:%u  control %s:%u\n", serve.http.address.c_str(),
              server->http_port(), cluster.address.c_str(), server->control_port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("head: {} received, stopping", signal_name(sig));
  server->stop();
  return 0;
}

/// Stops the node and returns `code`. If its actor system does not finish within 10 s, the
/// process ends with `code` instead of hanging: seen with CAF 0.17.6 when the head was lost
/// while an instance ran (a reference to the instance, whose handle went to the head, stays).
int stop_node(node_server& server, int code) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog{[&] {
    std::unique_lock lock{mu};
    if (!cv.wait_for(lock, std::chrono::seconds{10}, [&] { return done; })) {
      spdlog::warn("node: the actor system did not stop within 10 s; exiting anyway");
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(code);
    }
  }};
  server.stop();
  {
    std::lock_guard lock{mu};
    done = true;
  }
  cv.notify_one();
  watchdog.join();
  return code;
}

expected<int> run_node(node_args& a) {
  THAW_ASSIGN(auto cfg, a.common.load_config());
  THAW_ASSIGN(auto serve, serve_options::from_config(cfg));
  THAW_ASSIGN(auto cluster, cluster_options::from_config(cfg));
  auto node = serve.node;
  if (!a.name.empty())
    node.name = a.name;
  const auto colon = a.head.rfind(':');
  int head_port = -1;
  if (colon != std::string::npos && colon > 0) {
    try {
      head_port = std::stoi(a.head.substr(colon + 1));
    } catch (const std::exception&) {
      head_port = -1;
    }
  }
  if (head_port < 1 || head_port > 65535)
    return make_error(errc::invalid_argument, "--head '" + a.head + "': expected HOST:PORT");
  auto signals = block_stop_signals();
  THAW_ASSIGN(auto server, node_server::start(node, cluster, a.head.substr(0, colon),
                                              static_cast<std::uint16_t>(head_port)));
  std::printf("thaw node: %s joined the head at %s\n", node.name.c_str(), a.head.c_str());
  std::fflush(stdout);
  // Wait for a signal, looking every 200 ms whether the head went away.
  const timespec tick{0, 200'000'000};
  for (;;) {
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) {
      spdlog::info("node: {} received, stopping", signal_name(sig));
      return stop_node(*server, 0);
    }
    if (auto failed = server->failure())
      return stop_node(*server, report_error("node", *failed));
  }
}

} // namespace

void add_cluster_commands(CLI::App& app) {
  auto h = std::make_shared<head_args>();
  auto* head = app.add_subcommand(
      "head", "Run a cluster's head: the OpenAI API, registry, scheduler and routers; nodes join "
              "on the control port (cluster.port) with the cluster secret");
  add_common_options(*head, h->common);
  head->add_option("--host", h->host, "HTTP address (default http.address, 127.0.0.1)");
  head->add_option("--port", h->port, "HTTP port (default http.port, 8000; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  head->add_option("--control-port", h->control_port,
                   "Control port nodes join on (default cluster.port, 7070; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  head->callback([h] {
    if (auto s = init_logging(h->common.log_level); !s) {
      run_result = report_error("head", s.err());
      return;
    }
    auto r = run_head(*h);
    run_result = r ? *r : report_error("head", r.err());
  });

  auto n = std::make_shared<node_args>();
  auto* node = app.add_subcommand(
      "node", "Run a cluster node: joins the head and runs the instances it places here");
  add_common_options(*node, n->common);
  node->add_option("--head", n->head, "The head's control address, HOST:PORT")->required();
  node->add_option("--name", n->name, "This node's name (default node.name)");
  node->callback([n] {
    if (auto s = init_logging(n->common.log_level); !s) {
      run_result = report_error("node", s.err());
      return;
    }
    auto r = run_node(*n);
    run_result = r ? *r : report_error("node", r.err());
  });

  auto* cluster = app.add_subcommand("cluster", "Cluster set-up");
  cluster->require_subcommand(1);
  auto dir = std::make_shared<std::string>();
  auto* init = cluster->add_subcommand(
      "init", "Make DIR with a new cluster secret and TLS certificates (a CA, the head's and "
              "the nodes'); give the head and every node cluster.dir = \"DIR\"");
  init->add_option("DIR", *dir, "Directory to make")->required();
  init->callback([dir] {
    if (auto s = init_cluster_dir(*dir); !s) {
      run_result = report_error("cluster init", s.err());
      return;
    }
    std::printf("thaw cluster init: wrote the cluster secret and TLS certificates to %s:\n"
                "  secret, ca.pem           for the head and every node\n"
                "  head.pem, head.key       for the head\n"
                "  node.pem, node.key       for the nodes\n"
                "  ca.key                   keep it offline: it signs certificates\n"
                "Set cluster.dir = \"%s\" on the head and the nodes: their connections then "
                "run over TLS.\n",
                dir->c_str(), dir->c_str());
    run_result = 0;
  });
}

} // namespace thaw::app
