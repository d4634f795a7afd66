#include "actors/ssd_tier.hpp"

#include "runtime/common/posix.hpp"

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <spdlog/spdlog.h>

namespace thaw {
namespace {

struct ssd_tier_state {
  std::shared_ptr<node_context> ctx;
  std::map<std::string, std::string> dirs; ///< content id -> directory, as found
  static inline const char* name = "ssd_tier";
};

using ssd_tier_ptr = ssd_tier_actor::stateful_pointer<ssd_tier_state>;

expected<disk_checkpoint> open(ssd_tier_ptr self, const std::string& dir,
                               const std::string& content_id) {
  auto& s = self->state;
  const auto& node = s.ctx->options.name;
  THAW_ASSIGN(auto ck, checkpoint::open(dir));
  if (!content_id.empty() && ck.content_id() != content_id) {
    spdlog::warn("node {}: {} here is not the deployed checkpoint (content {}, deployed {})",
                 node, dir, ck.content_id(), content_id);
    return make_error(errc::not_found, dir + " on node " + node +
                                           " has other content than the deployed checkpoint");
  }
  s.dirs[ck.content_id()] = dir;
  return disk_checkpoint{std::make_shared<const checkpoint>(std::move(ck)), {}, {}};
}

expected<disk_checkpoint> lend(ssd_tier_ptr self, const std::string& dir) {
  THAW_ASSIGN(auto found, open(self, dir, {}));
  THAW_ASSIGN(found.tokenizer_json, read_text_file(found.ckpt->dir() / "tokenizer.json"));
  if (auto c = read_text_file(found.ckpt->dir() / "tokenizer_config.json"))
    found.tokenizer_config = std::move(*c);
  return found;
}

ssd_tier_actor::behavior_type ssd_tier_fn(ssd_tier_ptr self, std::shared_ptr<node_context> ctx) {
  self->state.ctx = std::move(ctx);
  return {
      [=](open_atom, const std::string& dir,
          const std::string& content_id) -> caf::result<disk_checkpoint> {
        auto found = open(self, dir, content_id);
        if (!found)
          return to_caf(found.err());
        return std::move(*found);
      },
      [=](lend_atom, const std::string& dir) -> caf::result<disk_checkpoint> {
        auto found = lend(self, dir);
        if (!found)
          return to_caf(with_context(std::move(found).err(),
                                     "node " + self->state.ctx->options.name + " cannot lend " +
                                         dir));
        return std::move(*found);
      },
      [=](status_atom) { return ssd_tier_report{self->state.dirs}; },
  };
}

} // namespace

ssd_tier_actor spawn_ssd_tier(caf::actor_system& sys, std::shared_ptr<node_context> ctx) {
  return sys.spawn(ssd_tier_fn, std::move(ctx));
}

} // namespace thaw
