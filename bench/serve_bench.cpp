#include "bench/serve_bench.hpp"

#include "bench/completion_stream.hpp"
#include "bench/timing.hpp"
#include "transport/http_client.hpp"

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <system_error>
#include <nlohmann/json.hpp>
#include <thread>

namespace thaw::bench {
namespace {

/// Work shared by the dispatcher and the client threads.
class client_pool {
public:
  client_pool(const std::vector<serve_request>& requests, const serve_bench_options& options,
              std::string host, std::uint16_t port, clock::time_point start)
      : requests_(requests), options_(options), host_(std::move(host)), port_(port), start_(start),
        records_(requests.size()) {}

  /// Queues request `i`, starting a thread if none is free and the limit allows.
  void submit(std::size_t i) {
    std::lock_guard lock(mutex_);
    records_[i].scheduled_s = requests_[i].arrival_s;
    if (idle_ <= queue_.size()) {
      bool started = false;
      if (threads_.size() < options_.max_concurrency) {
        try {
          threads_.emplace_back([this] { work(); });
          started = true;
        } catch (const std::system_error&) {
          // The system's thread limit: carry on with the threads there are, as at the limit.
        }
      }
      if (!started && !threads_.empty())
        records_[i].waited_for_thread = true;
      else if (!started)
        return fail_unsent(i);
    }
    queue_.push_back(i);
    ready_.notify_one();
  }

  /// Lets the threads finish what is queued and joins them.
  std::vector<request_record> finish(std::size_t& threads) {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_)
      t.join();
    threads = threads_.size();
    return std::move(records_);
  }

private:
  /// A request no thread can send (not even one could be started).
  void fail_unsent(std::size_t i) {
    records_[i].model = requests_[i].model;
    records_[i].error = "no client thread could be started";
  }

  void work() {
    std::unique_ptr<http::client> client;
    std::unique_lock lock(mutex_);
    while (true) {
      ++idle_;
      ready_.wait(lock, [this] { return !queue_.empty() || closing_; });
      --idle_;
      if (queue_.empty())
        return;
      const auto i = queue_.front();
      queue_.pop_front();
      lock.unlock();
      send(client, i);
      lock.lock();
    }
  }

  /// Sends request i and records how it went; only this thread touches records_[i] meanwhile.
  void send(std::unique_ptr<http::client>& client, std::size_t i) {
    const auto& req = requests_[i];
    auto& rec = records_[i];
    rec.model = req.model;
    rec.prompt_tokens = req.prompt_tokens;
    const std::string body = completion_body(req);
    http::header_map headers{{"content-type", "application/json"}};
    if (!options_.api_key.empty())
      headers["authorization"] = "Bearer " + options_.api_key;
    std::string transport_error;
    int status = 0;
    rec.sent_s = since(start_);
    completion_stream stream(rec.sent_s);
    if (!client) {
      auto c = http::client::connect(host_, port_, options_.timeout);
      if (c)
        client = std::move(*c);
      else
        transport_error = c.err().to_string();
    }
    if (client) {
      auto resp =
          client->stream("POST", "/v1/completions", body, headers, [&](std::string_view bytes) {
            stream.on_bytes(bytes, since(start_));
            return true;
          });
      if (resp) {
        status = resp->status;
        if (!resp->body.empty())
          stream.on_bytes(resp->body, since(start_));
      } else {
        transport_error = resp.err().to_string();
        client.reset(); // a fresh connection for the next request
      }
    }
    stream.finish(status, transport_error, rec);
  }

  const std::vector<serve_request>& requests_;
  const serve_bench_options& options_;
  const std::string host_;
  const std::uint16_t port_;
  const clock::time_point start_;

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::size_t> queue_;
  std::size_t idle_ = 0;
  bool closing_ = false;
  std::vector<std::thread> threads_;
  std::vector<request_record> records_;
};

} // namespace

std::string completion_body(const serve_request& request) {
  nlohmann::json j{{"model", request.model},
                   {"prompt", make_prompt(request.prompt_tokens)},
                   {"max_tokens", request.output_tokens},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}},
                   {"ignore_eos", true},
                   {"temperature", 0}};
  // Replace, not throw on, bytes that are not UTF-8 in a model name.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

expected<serve_run> run_serve_bench(const std::vector<serve_request>& requests,
                                    const serve_bench_options& options) {
  if (requests.empty())
    return make_error(errc::invalid_argument, "the workload has no requests");
  if (options.max_concurrency == 0)
    return make_error(errc::invalid_argument, "--max-concurrency must be at least 1");
  THAW_ASSIGN(auto host_port, http::parse_url(options.url));
  const auto start = clock::now();
  client_pool pool(requests, options, host_port.first, host_port.second, start);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    std::this_thread::sleep_until(start +
                                  std::chrono::duration_cast<clock::duration>(
                                      std::chrono::duration<double>(requests[i].arrival_s)));
    pool.submit(i);
  }
  if (options.on_all_sent)
    options.on_all_sent();
  serve_run run;
  run.records = pool.finish(run.threads);
  run.duration_s = since(start);
  return run;
}

expected<std::vector<std::string>> list_models(const serve_bench_options& options) {
  THAW_ASSIGN(auto host_port, http::parse_url(options.url));
  THAW_ASSIGN(auto client,
              http::client::connect(host_port.first, host_port.second, options.timeout));
  http::header_map headers;
  if (!options.api_key.empty())
    headers["authorization"] = "Bearer " + options.api_key;
  THAW_ASSIGN(auto resp, client->request("GET", "/v1/models", {}, headers));
  if (resp.status != 200)
    return make_error(errc::io_error,
                      options.url + "/v1/models: HTTP " + std::to_string(resp.status));
  auto j = nlohmann::json::parse(resp.body, nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array())
    return make_error(errc::parse_error, options.url + "/v1/models: no data array in the response");
  std::vector<std::string> names;
  for (const auto& m : j["data"])
    if (m.is_object() && m.contains("id") && m["id"].is_string())
      names.push_back(m["id"].get<std::string>());
  if (names.empty())
    return make_error(errc::not_found, options.url + "/v1/models: the server lists no model");
  return names;
}

} // namespace thaw::bench
