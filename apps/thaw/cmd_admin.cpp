// thaw deploy / delete / status / models: clients of a running server's admin and model APIs.

#include "apps/thaw/commands.hpp"

#include "runtime/common/units.hpp"
#include "transport/http_client.hpp"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace thaw::app {
namespace {

using json = nlohmann::json;

struct client_args {
  std::string url = "http://127.0.0.1:8000";
  std::string api_key;
  bool json_out = false;
};

void add_client_options(CLI::App& cmd, client_args& a) {
  cmd.add_option("--url", a.url, "The server (head)")->capture_default_str();
  cmd.add_option("--api-key", a.api_key, "Bearer API key (default $THAW_API_KEY)")
      ->envname("THAW_API_KEY");
  cmd.add_flag("--json", a.json_out, "Print the server's JSON as it is");
}

/// Sends one request; a non-2xx answer becomes an error carrying the server's message.
expected<json> call(const client_args& a, const std::string& method, const std::string& target,
                    std::string body = {}) {
  THAW_ASSIGN(auto hp, http::parse_url(a.url));
  THAW_ASSIGN(auto c, http::client::connect(hp.first, hp.second));
  http::header_map h;
  if (!body.empty())
    h["content-type"] = "application/json";
  if (!a.api_key.empty())
    h["authorization"] = "Bearer " + a.api_key;
  THAW_ASSIGN(auto r, c->request(method, target, std::move(body), h));
  auto j = json::parse(r.body, nullptr, false);
  if (r.status / 100 != 2) {
    std::string msg = "HTTP " + std::to_string(r.status);
    if (!j.is_discarded() && j.contains("error") && j["error"].contains("message"))
      msg += ": " + j["error"]["message"].get<std::string>();
    const auto code = r.status == 404   ? errc::not_found
                      : r.status == 409 ? errc::already_exists
                                        : errc::invalid_argument;
    return make_error(code, msg);
  }
  if (j.is_discarded())
    return make_error(errc::parse_error, a.url + target + ": the answer is not JSON");
  return j;
}

int finish(const std::string& command, const expected<json>& r, const client_args& a,
           const std::function<void(const json&)>& print) {
  if (!r)
    return report_error(command, r.err());
  if (a.json_out)
    std::printf("%s\n", r->dump(2).c_str());
  else
    print(*r);
  return 0;
}

void print_status(const json& s) {
  for (const auto& n : s["nodes"]) {
    std::printf("node %s: DRAM tier %s of %s, %llu loads from SSD, %llu from DRAM, %llu from "
                "peers, %llu starts in place\n",
                n["name"].get<std::string>().c_str(),
                format_bytes(n["dram_used_bytes"].get<std::uint64_t>()).c_str(),
                format_bytes(n["dram_bytes"].get<std::uint64_t>()).c_str(),
                static_cast<unsigned long long>(n["loads_ssd"].get<std::uint64_t>()),
                static_cast<unsigned long long>(n["loads_dram"].get<std::uint64_t>()),
                static_cast<unsigned long long>(n.value("loads_remote", std::uint64_t{0})),
                static_cast<unsigned long long>(n.value("starts_in_place", std::uint64_t{0})));
    for (const auto& sl : n["slots"]) {
      std::string models;
      for (const auto& m : sl["models"])
        models += " " + m.get<std::string>();
      std::printf("  slot %d (%s): %s of %s used;%s\n", sl["index"].get<int>(),
                  sl["kind"].get<std::string>().c_str(),
                  format_bytes(sl["used_bytes"].get<std::uint64_t>()).c_str(),
                  format_bytes(sl["memory_bytes"].get<std::uint64_t>()).c_str(),
                  models.empty() ? " idle" : models.c_str());
    }
  }
  std::printf("\n%-24s %9s %8s %7s %9s %11s\n", "MODEL", "INSTANCES", "STARTING", "QUEUED",
              "IN FLIGHT", "COLD STARTS");
  for (const auto& m : s["models"])
    std::printf("%-24s %9d %8d %7d %9d %11llu\n", m["name"].get<std::string>().c_str(),
                m["instances"].get<int>(), m["starting"].get<int>(), m["queued"].get<int>(),
                m["in_flight"].get<int>(),
                static_cast<unsigned long long>(m["cold_starts"].get<std::uint64_t>()));
}

} // namespace

void add_admin_commands(CLI::App& app) {
  {
    auto a = std::make_shared<client_args>();
    auto spec = std::make_shared<json>(json::object());
    auto name = std::make_shared<std::string>();
    auto ckpt = std::make_shared<std::string>();
    auto ints = std::make_shared<std::map<std::string, int>>();
    auto keep_alive = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("deploy", "Deploy a model on a running server");
    cmd->add_option("NAME", *name, "Model name clients will use")->required();
    cmd->add_option("--checkpoint", *ckpt, "Checkpoint directory (on the nodes)")->required();
    for (const char* k : {"min", "max", "target", "queue-limit", "kv-blocks"})
      cmd->add_option(std::string{"--"} + k, (*ints)[k], "")->default_str("server default");
    cmd->get_option("--min")->description("Instances kept running");
    cmd->get_option("--max")->description("Instances at most");
    cmd->get_option("--target")->description("Sequences per instance before scaling out");
    cmd->get_option("--queue-limit")->description("Requests waiting or running before 429");
    cmd->get_option("--kv-blocks")->description("KV cache blocks of 16 tokens per instance");
    cmd->add_option("--keep-alive", *keep_alive, "Idle time before an instance stops (30s, 5m)");
    add_client_options(*cmd, *a);
    cmd->callback([=] {
      json body = {{"name", *name}, {"checkpoint", *ckpt}};
      const std::map<std::string, std::string> keys = {{"min", "min_instances"},
                                                       {"max", "max_instances"},
                                                       {"target", "target_concurrency"},
                                                       {"queue-limit", "queue_limit"},
                                                       {"kv-blocks", "kv_blocks"}};
      for (const auto& [flag, key] : keys)
        if (cmd->count("--" + flag) != 0)
          body[key] = (*ints)[flag];
      if (!keep_alive->empty())
        body["keep_alive"] = *keep_alive;
      run_result = finish("deploy", call(*a, "POST", "/admin/models", body.dump()), *a,
                          [](const json& j) {
                            std::printf("deployed %s (%s)\n", j["name"].get<std::string>().c_str(),
                                        j["checkpoint"].get<std::string>().c_str());
                          });
    });
  }
  {
    auto a = std::make_shared<client_args>();
    auto name = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("delete", "Delete a model from a running server");
    cmd->add_option("NAME", *name, "Model name")->required();
    add_client_options(*cmd, *a);
    cmd->callback([=] {
      run_result = finish("delete", call(*a, "DELETE", "/admin/models/" + *name), *a,
                          [&](const json&) { std::printf("deleted %s\n", name->c_str()); });
    });
  }
  {
    auto a = std::make_shared<client_args>();
    auto name = std::make_shared<std::string>();
    auto from = std::make_shared<std::string>();
    auto to = std::make_shared<std::string>();
    auto max_gap = std::make_shared<int>(1);
    auto* cmd = app.add_subcommand(
        "migrate", "Move a model's instance, running streams and all, to another node");
    cmd->add_option("NAME", *name, "Model name")->required();
    cmd->add_option("--from", *from, "Node the instance runs on")->required();
    cmd->add_option("--to", *to, "Node to move it to")->required();
    cmd->add_option("--max-gap", *max_gap, "Tokens the target may lag at the handoff")
        ->default_val(1)
        ->check(CLI::NonNegativeNumber);
    add_client_options(*cmd, *a);
    cmd->callback([=] {
      json body = {{"from", *from}, {"to", *to}, {"max_gap", *max_gap}};
      run_result = finish("migrate", call(*a, "POST", "/admin/models/" + *name + "/migrate",
                                          body.dump()),
                          *a, [&](const json& j) {
                            std::printf("%s %s -> %s: %d moved, %d finished on the source, %d "
                                        "kept, %d rounds, %lld tokens recomputed%s%s\n",
                                        name->c_str(), from->c_str(), to->c_str(),
                                        j.value("moved", 0), j.value("finished_on_source", 0),
                                        j.value("kept", 0), j.value("rounds", 0),
                                        static_cast<long long>(j.value("tokens_recomputed", 0)),
                                        j.value("aborted", false) ? "; aborted: " : "",
                                        j.value("reason", std::string{}).c_str());
                          });
    });
  }
  {
    auto a = std::make_shared<client_args>();
    auto* cmd = app.add_subcommand("status", "Nodes, tiers, slots, instances and models");
    add_client_options(*cmd, *a);
    cmd->callback([=] {
      run_result = finish("status", call(*a, "GET", "/admin/status"), *a, print_status);
    });
  }
  {
    auto a = std::make_shared<client_args>();
    auto* cmd = app.add_subcommand("models", "The models a server offers (GET /v1/models)");
    add_client_options(*cmd, *a);
    cmd->callback([=] {
      run_result = finish("models", call(*a, "GET", "/v1/models"), *a, [](const json& j) {
        for (const auto& m : j["data"])
          std::printf("%s\n", m["id"].get<std::string>().c_str());
      });
    });
  }
}

} // namespace thaw::app
