// A small fixed pool for the map kernels where the build has no OpenMP (with OpenMP, the hook
// runs its kernels on OpenMP's team, the one ggml's CPU backend uses). llama.cpp's own threads
// are idle while the eval callback runs, so the callback can use that many threads itself.
// Owned by one Hook (no global state); the calling thread works too, and run() returns when
// every task is done.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lingalign {

class ThreadPool {
public:
    explicit ThreadPool(int n_workers) {
        for (int i = 0; i < n_workers; ++i) {
            threads_.emplace_back([this] { worker_loop(); });
        }
    }

    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        work_cv_.notify_all();
        for (auto & t : threads_) {
            t.join();
        }
    }

    ThreadPool(const ThreadPool &) = delete;
    ThreadPool & operator=(const ThreadPool &) = delete;

    int size() const { return (int) threads_.size() + 1; }

    // Calls fn(task) for every task in [0, n_tasks). fn must not throw.
    void run(int n_tasks, const std::function<void(int)> & fn) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            n_tasks_ = n_tasks;
            next_.store(0);
            finished_ = 0;
            ++generation_;
        }
        work_cv_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(mutex_);
        done_cv_.wait(lock, [this] { return finished_ == (int) threads_.size(); });
        fn_ = nullptr;
    }

private:
    void drain() {
        for (int t = next_.fetch_add(1); t < n_tasks_; t = next_.fetch_add(1)) {
            (*fn_)(t);
        }
    }

    void worker_loop() {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) {
                    return;
                }
                seen = generation_;
            }
            drain();
            {
                std::lock_guard<std::mutex> lock(mutex_);
                ++finished_;
            }
            done_cv_.notify_one();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable work_cv_;
    std::condition_variable done_cv_;
    const std::function<void(int)> * fn_ = nullptr;
    int n_tasks_ = 0;
    std::atomic<int> next_{0};
    int finished_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

} // namespace lingalign
