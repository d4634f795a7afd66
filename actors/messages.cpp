#include "actors/messages.hpp"

#include "actors/registry.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace thaw {

token_event failure_event(std::uint64_t id, error e) {
  token_event ev;
  ev.request_id = id;
  ev.finish = finish_reason::error;
  ev.failed = true;
  ev.failure = std::move(e);
  return ev;
}

namespace {
constexpr auto thaw_category = caf::atom("thaw");
}

caf::error to_caf(const error& e) {
  return caf::error{static_cast<std::uint8_t>(e.code), thaw_category, caf::make_message(e.message)};
}

error from_caf(const caf::error& e) {
  if (e.category() == thaw_category) {
    std::string message;
    if (e.context().match_elements<std::string>())
      message = e.context().get_as<std::string>(0);
    return make_error(static_cast<errc>(e.code()), std::move(message));
  }
  // CAF's own: a request that timed out or an actor that died is the peer's failure.
  return make_error(errc::io_error, "actor system: " + caf::to_string(e));
}

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<error>("thaw_error");
  cfg.add_message_type<sampling_params>("sampling_params");
  cfg.add_message_type<token_logprob>("token_logprob");
  cfg.add_message_type<std::vector<token_logprob>>("std::vector<token_logprob>");
  cfg.add_message_type<generation_request>("generation_request");
  cfg.add_message_type<model_spec>("model_spec");
  cfg.add_message_type<std::vector<model_spec>>("std::vector<model_spec>");
  cfg.add_message_type<submit_request>("submit_request");
  cfg.add_message_type<instance_request>("instance_request");
  cfg.add_message_type<cancel_request>("cancel_request");
  cfg.add_message_type<token_event>("token_event");
  cfg.add_message_type<instance_info>("instance_info");
  cfg.add_message_type<slot_info>("slot_info");
  cfg.add_message_type<node_status>("node_status");
  cfg.add_message_type<std::vector<node_status>>("std::vector<node_status>");
  cfg.add_message_type<instance_started>("instance_started");
  cfg.add_message_type<pull_offer>("pull_offer");
  cfg.add_message_type<model_status>("model_status");
  cfg.add_message_type<join_cluster>("join_cluster");
  cfg.add_message_type<rng_state>("rng_state");
  cfg.add_message_type<sequence_state>("sequence_state");
  cfg.add_message_type<migrate_order>("migrate_order");
  cfg.add_message_type<migrate_state>("migrate_state");
  cfg.add_message_type<migrate_ack>("migrate_ack");
  cfg.add_message_type<migrate_drop>("migrate_drop");
  cfg.add_message_type<migrate_handoff>("migrate_handoff");
  cfg.add_message_type<migration_report>("migration_report");
}

} // namespace thaw
