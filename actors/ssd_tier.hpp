#pragma once
/// The SSD tier actor: the checkpoints on this node's disk. The node opens every checkpoint it
/// starts through it, and the DRAM tier every one it reads in or lends; it checks a copy
/// against the deployed content and remembers what it found, which the node reports as its
/// local models. The bytes themselves move through the loader's SSD readers, on the threads of
/// whoever loads them (an instance, a prefetch): never on this actor.
///
///   (open_atom, std::string dir, std::string content_id) -> disk_checkpoint | error
///       the checkpoint at `dir` (a relative path is looked up from the node's working
///       directory). not_found when it is not there, or when its content is not `content_id`
///       (unless that is empty): another model at the same path is not the deployed one.
///   (lend_atom, std::string dir) -> disk_checkpoint | error
///       the same, with the tokenizer files a peer needs besides the bytes (tokenizer.json,
///       and tokenizer_config.json when there is one).
///   (status_atom) -> ssd_tier_report

#include "actors/messages.hpp"
#include "actors/node_context.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <map>
#include <memory>
#include <string>

namespace thaw {

/// A checkpoint found on this node's disk. Local to a node, never sent over the network.
struct disk_checkpoint {
  std::shared_ptr<const checkpoint> ckpt;
  std::string tokenizer_json;   ///< (lend_atom only)
  std::string tokenizer_config; ///< (lend_atom only) empty when the checkpoint has none
};

/// The checkpoints found on this disk so far.
struct ssd_tier_report {
  std::map<std::string, std::string> dirs; ///< content id -> directory
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ssd_tier_report& x) {
  return f(caf::meta::type_name("ssd_tier_report"), x.dirs);
}

using ssd_tier_actor = caf::typed_actor<
    caf::replies_to<open_atom, std::string, std::string>::with<disk_checkpoint>,
    caf::replies_to<lend_atom, std::string>::with<disk_checkpoint>,
    caf::replies_to<status_atom>::with<ssd_tier_report>>;

[[nodiscard]] ssd_tier_actor spawn_ssd_tier(caf::actor_system& sys,
                                            std::shared_ptr<node_context> ctx);

} // namespace thaw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(thaw::disk_checkpoint)
