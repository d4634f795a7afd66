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

#include <memory>

namespace thaw {

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
