#pragma once
// A device whose copies wait at a gate until the test opens it: a load cannot finish while the
// gate is shut, so a test can act "mid-load" deterministically. Everything else (memory,
// registration) is the wrapped device's: a host device of its own, or one the test gives.

#include "gpu/device.hpp"
#include "gpu/host/host_device.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace thaw::testing {

class gated_device final : public device {
public:
  /// Gates a host device of its own.
  gated_device() : owned_(std::make_unique<host_device>()), inner_(*owned_) {}
  /// Gates `inner`, which must outlive it.
  explicit gated_device(device& inner) : inner_(inner) {}

  device_kind kind() const noexcept override { return inner_.kind(); }
  std::string name() const override { return "gated " + inner_.name(); }
  std::uint64_t memory_bytes() const noexcept override { return inner_.memory_bytes(); }
  expected<std::unique_ptr<device_buffer>> allocate(std::size_t bytes) override {
    return inner_.allocate(bytes);
  }
  std::unique_ptr<copy_engine> make_copy_engine(int lanes) override {
    return std::make_unique<engine>(*this, inner_.make_copy_engine(lanes));
  }
  status register_host_memory(void* ptr, std::size_t bytes) override {
    return inner_.register_host_memory(ptr, bytes);
  }
  void unregister_host_memory(void* ptr) noexcept override { inner_.unregister_host_memory(ptr); }

  /// Blocks until at least one copy is held at the gate.
  void wait_for_a_copy() {
    std::unique_lock lock{mutex_};
    cv_.wait(lock, [&] { return !held_.empty(); });
  }
  /// Lets the held copies and every later one through.
  void open() {
    std::deque<std::function<void()>> held;
    {
      std::lock_guard lock{mutex_};
      open_ = true;
      held.swap(held_);
    }
    for (auto& submit : held)
      submit();
  }

private:
  class engine final : public copy_engine {
  public:
    engine(gated_device& dev, std::unique_ptr<copy_engine> inner)
        : dev_(dev), inner_(std::move(inner)) {}
    void submit(device_buffer& dst, std::uint64_t offset, const void* src, std::size_t n,
                completion done) override {
      std::unique_lock lock{dev_.mutex_};
      if (dev_.open_) {
        lock.unlock();
        inner_->submit(dst, offset, src, n, std::move(done));
        return;
      }
      dev_.held_.push_back([this, &dst, offset, src, n, done = std::move(done)]() mutable {
        inner_->submit(dst, offset, src, n, std::move(done));
      });
      dev_.cv_.notify_all();
    }
    void drain() override { inner_->drain(); }

  private:
    gated_device& dev_;
    std::unique_ptr<copy_engine> inner_;
  };

  std::unique_ptr<device> owned_;
  device& inner_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  std::deque<std::function<void()>> held_;
};

} // namespace thaw::testing
