#pragma once
// The gateway's state and the functions its two source files share (internal to actors/).

#include "actors/gateway.hpp"
#include "actors/router.hpp"
#include "actors/scheduler.hpp"
#include "runtime/api/openai.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <map>
#include <unordered_map>

namespace thaw::gw {

using clock_type = std::chrono::steady_clock;

/// One /v1/(chat/)completions call: n x prompts engine sequences, one response.
struct completion_call {
  std::shared_ptr<http::responder> responder;
  api::completion_request req;
  api::response_meta meta;
  model_frontend_ptr model;
  std::vector<std::uint64_t> request_ids; ///< per choice
  std::vector<api::choice_output> choices;
  std::vector<bool> choice_started;       ///< a stream chunk was written for the choice
  std::vector<std::uint32_t> next_seq;    ///< per choice: the event seq expected next
  std::int32_t remaining = 0;             ///< choices not finished
  api::usage usage;
  clock_type::time_point start = clock_type::now();
  clock_type::time_point last_token{};
  bool first_token = false;
  bool stream_started = false;
};

/// Metrics the gateway updates, registered once.
struct gateway_metrics {
  std::shared_ptr<metrics::registry> reg;
  metrics::family<metrics::gauge>* running = nullptr;
  metrics::family<metrics::gauge>* waiting = nullptr;
  metrics::family<metrics::histogram>* ttft = nullptr;
  metrics::family<metrics::histogram>* itl = nullptr;
  metrics::family<metrics::histogram>* e2e = nullptr;
  metrics::family<metrics::counter>* prompt_tokens = nullptr;
  metrics::family<metrics::counter>* generation_tokens = nullptr;
  metrics::family<metrics::counter>* success = nullptr;
  metrics::family<metrics::counter>* http_errors = nullptr;
};

struct gateway_state {
  gateway_options options;
  registry_actor registry;
  scheduler_actor scheduler;
  gateway_metrics m;
  std::map<std::string, model_frontend_ptr> models;
  std::unordered_map<std::uint64_t, completion_call> calls; // by call id
  /// engine request id -> (call id, choice index)
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::int32_t>> by_request;
  std::uint64_t next_call = 1;
  std::uint64_t next_request = 1;

  static inline const char* name = "gateway";
};

using gateway_ptr = gateway_actor::stateful_pointer<gateway_state>;


/// Answers with an OpenAI-form error (and counts it).
void send_error(gateway_ptr self, http::responder& r, const api::api_error& e);
/// The key a request presents may use `model` (always true when no keys are configured).
[[nodiscard]] bool may_use(const gateway_state& s, const http::request& req,
                           const std::string& model);

/// POST /v1/completions and /v1/chat/completions.
void start_completion(gateway_ptr self, api::endpoint kind, http_call& call);
/// A token event from a router.
void on_token_event(gateway_ptr self, token_event& ev);
/// The client of a call disconnected: cancel its sequences.
void on_call_gone(gateway_ptr self, std::uint64_t call_id);

} // namespace thaw::gw
