// The gateway's completion calls: request -> sequences at the router -> JSON or SSE.

#include "actors/gateway_state.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

namespace thaw::gw {
namespace {

double seconds(clock_type::duration d) {
  return std::chrono::duration<double>(d).count();
}

/// Forgets a call and its sequences; cancels at the router those still running.
void drop_call(gateway_ptr self, std::uint64_t call_id, bool cancel_running) {
  auto& s = self->state;
  auto it = s.calls.find(call_id);
  if (it == s.calls.end())
    return;
  auto& call = it->second;
  const auto& model = call.model->spec.name;
  if (call.first_token)
    s.m.running->get({model}).add(-1);
  else
    s.m.waiting->get({model}).add(-1);
  for (auto id : call.request_ids) {
    if (s.by_request.erase(id) != 0 && cancel_running)
      self->send(as_router(call.model->router), cancel_request{id});
  }
  s.calls.erase(it);
}

void fail_call(gateway_ptr self, std::uint64_t call_id, const error& e) {
  auto& call = self->state.calls.at(call_id);
  const auto api_err = api::from_error(e);
  spdlog::debug("gateway: call {} failed: {}", call_id, e.to_string());
  if (call.stream_started) {
    call.responder->write(api::error_event(api_err));
    call.responder->write(std::string{api::done_event()});
    call.responder->finish();
  } else {
    send_error(self, *call.responder, api_err);
  }
  drop_call(self, call_id, true);
}

void complete_call(gateway_ptr self, std::uint64_t call_id) {
  auto& s = self->state;
  auto& call = s.calls.at(call_id);
  const auto& model = call.model->spec.name;
  const auto& tok = *call.model->tok;
  if (call.req.stream) {
    if (call.req.include_usage)
      call.responder->write(api::usage_event(call.req, call.meta, call.usage));
    call.responder->write(std::string{api::done_event()});
    call.responder->finish();
  } else {
    call.responder->send(200, "application/json",
                         api::response_json(call.req, call.meta, call.choices, call.usage, tok));
  }
  s.m.e2e->get({model}).observe(seconds(clock_type::now() - call.start));
  s.m.prompt_tokens->get({model}).inc(static_cast<double>(call.usage.prompt_tokens));
  s.m.generation_tokens->get({model}).inc(static_cast<double>(call.usage.completion_tokens));
  for (const auto& c : call.choices)
    s.m.success->get({model, std::string{to_string(c.finish)}}).inc();
  drop_call(self, call_id, false);
}

} // namespace

void start_completion(gateway_ptr self, api::endpoint kind, http_call& hc) {
  auto& s = self->state;
  auto parsed = api::parse_request(kind, hc.request->body);
  if (auto* e = std::get_if<api::api_error>(&parsed)) {
    send_error(self, *hc.responder, *e);
    return;
  }
  auto& req = std::get<api::completion_request>(parsed);
  auto mit = s.models.find(req.model);
  if (mit == s.models.end() || !may_use(s, *hc.request, req.model)) {
    api::api_error e;
    e.status = 404;
    e.type = "NotFoundError";
    e.message = "The model `" + req.model + "` does not exist.";
    e.param = "model";
    e.code = "model_not_found";
    send_error(self, *hc.responder, e);
    return;
  }
  const auto& model = mit->second;
  auto built = api::to_engine_requests(req, *model->tok, model->tmpl.get(), model->max_context);
  if (auto* e = std::get_if<api::api_error>(&built)) {
    send_error(self, *hc.responder, *e);
    return;
  }
  auto& er = std::get<api::engine_requests>(built);

  const auto call_id = s.next_call++;
  completion_call call;
  call.responder = hc.responder;
  call.model = model;
  call.meta = api::new_meta(kind, req.model);
  const auto n = er.requests.size();
  call.choices.resize(n);
  call.choice_started.assign(n, false);
  call.next_seq.assign(n, 0);
  call.remaining = static_cast<std::int32_t>(n);
  for (auto t : er.prompt_tokens)
    call.usage.prompt_tokens += t;
  call.req = std::move(req);
  for (std::size_t i = 0; i < n; ++i) {
    const auto rid = s.next_request++;
    call.choices[i].index = static_cast<std::int32_t>(i);
    call.request_ids.push_back(rid);
    s.by_request[rid] = {call_id, static_cast<std::int32_t>(i)};
    self->send(as_router(model->router),
               submit_request{rid, std::move(er.requests[i]), caf::actor_cast<caf::actor>(self)});
  }
  s.m.waiting->get({model->spec.name}).add(1);
  auto gateway = caf::actor_cast<caf::actor>(self);
  call.responder->on_disconnect([gateway, call_id] { caf::anon_send(gateway, call_gone{call_id}); });
  s.calls.emplace(call_id, std::move(call));
}

void on_token_event(gateway_ptr self, token_event& ev) {
  auto& s = self->state;
  auto rit = s.by_request.find(ev.request_id);
  if (rit == s.by_request.end())
    return; // its call is gone
  const auto [call_id, index] = rit->second;
  auto& call = s.calls.at(call_id);
  auto& seq = call.next_seq[index];
  if (ev.seq < seq)
    return; // a duplicate
  if (ev.seq > seq)
    spdlog::warn("gateway: request {} skipped events {}..{}", ev.request_id, seq, ev.seq - 1);
  seq = ev.seq + 1;
  if (ev.failed) {
    fail_call(self, call_id, ev.failure);
    return;
  }
  const auto& model = call.model->spec.name;
  const auto now = clock_type::now();
  auto& choice = call.choices[index];
  const bool with_logprobs = call.req.sampling.logprobs >= 0;
  if (ev.token >= 0) {
    if (!call.first_token) {
      call.first_token = true;
      s.m.ttft->get({model}).observe(seconds(now - call.start));
      s.m.waiting->get({model}).add(-1);
      s.m.running->get({model}).add(1);
    } else {
      s.m.itl->get({model}).observe(seconds(now - call.last_token));
    }
    call.last_token = now;
    choice.tokens.push_back(ev.token);
    ++call.usage.completion_tokens;
    if (with_logprobs) {
      choice.logprobs.push_back(ev.logprob);
      choice.top.push_back(ev.top);
    }
  }
  call.usage.cached_tokens = std::max<std::int64_t>(call.usage.cached_tokens, ev.cached_tokens);
  choice.text += ev.text;
  const bool last = ev.finish != finish_reason::none;
  if (last) {
    choice.finish = ev.finish;
    choice.stop_reason = ev.stop_reason;
  }
  if (call.req.stream && (!ev.text.empty() || last || (with_logprobs && ev.token >= 0))) {
    if (!call.stream_started) {
      call.stream_started = true;
      call.responder->start_stream(200, "text/event-stream", {{"cache-control", "no-cache"}});
    }
    api::chunk_delta d;
    d.index = index;
    d.first = !call.choice_started[index];
    call.choice_started[index] = true;
    d.text_offset = api::char_count(choice.text) - api::char_count(ev.text);
    d.text = std::move(ev.text);
    if (ev.token >= 0) {
      d.tokens.push_back(ev.token);
      if (with_logprobs) {
        d.logprobs.push_back(ev.logprob);
        d.top.push_back(std::move(ev.top));
      }
    }
    d.finish = ev.finish;
    d.stop_reason = ev.stop_reason;
    call.responder->write(api::stream_event(call.req, call.meta, d, *call.model->tok));
  }
  if (last) {
    s.by_request.erase(rit);
    if (--call.remaining == 0)
      complete_call(self, call_id);
  }
}

void on_call_gone(gateway_ptr self, std::uint64_t call_id) {
  if (self->state.calls.count(call_id) == 0)
    return;
  spdlog::info("gateway: client of call {} disconnected; cancelling its sequences", call_id);
  drop_call(self, call_id, true);
}

} // namespace thaw::gw
