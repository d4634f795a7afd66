#pragma once
/// The registry actor (head): the deployed models, their checkpoints and serving settings. It
/// validates a deployment before accepting it (the checkpoint opens and checks out, its
/// tokenizer loads), spawns the model's router, and tells subscribers (the gateway) about every
/// model added or removed, with what they need to tokenize for it.
///
/// Messages:
///   (deploy_atom, model_spec) -> model_spec | error
///       invalid_argument (bad name or settings), already_exists, or the checkpoint's error
///       a model deployed with `prefetch` is then read into the DRAM tier of the node with the
///       most free DRAM (asked of the scheduler), in the background: deploy does not wait
///   (delete_atom, std::string name) -> bool | error    stops the router and its instances
///   (list_atom) -> std::vector<model_spec>
///   (sub_atom, caf::actor) -> bool     the subscriber gets (deploy_atom, model_frontend_ptr)
///                                      for every model now and later, (delete_atom, name) on
///                                      removal

#include "actors/messages.hpp"
#include "runtime/common/metrics.hpp"
#include "runtime/engine/chat_template.hpp"
#include "runtime/engine/tokenizer.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace thaw {

/// The registry's interface (the messages above), checked by the compiler against its behavior.
/// (prefetch_atom, name, attempt) is its own retry timer.
using registry_actor = caf::typed_actor<
    caf::replies_to<deploy_atom, model_spec>::with<model_spec>,
    caf::reacts_to<prefetch_atom, std::string, std::int32_t>,
    caf::replies_to<delete_atom, std::string>::with<bool>,
    caf::replies_to<list_atom>::with<std::vector<model_spec>>,
    caf::replies_to<sub_atom, caf::actor>::with<bool>>;

/// A model as the gateway sees it. Local to the head: shared, immutable.
struct model_frontend {
  model_spec spec;
  caf::actor router;
  std::shared_ptr<const tokenizer> tok;
  std::shared_ptr<const chat_template> tmpl; ///< null: the model has no chat template
  std::int32_t max_context = 0;              ///< tokens, prompt and completion together
  std::int64_t created = 0;                  ///< unix seconds
};
using model_frontend_ptr = std::shared_ptr<const model_frontend>;

[[nodiscard]] caf::actor spawn_registry(caf::actor_system& sys, caf::actor scheduler,
                                        std::shared_ptr<metrics::registry> metrics);

} // namespace thaw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::model_frontend_ptr)
