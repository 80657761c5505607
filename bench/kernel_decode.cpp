// Decode's map kernel alone: one 640-wide row through 18 full-rank 640x640 maps (Gemma 3 270M's
// shape), float32 and float16, with the maps in cache ("warm") and after 300 MB of other data has
// been read ("cold", as after a decode step streamed the model's weights). Prints microseconds
// per token and the ratios, measured side by side in one run; one thread.
//
//     g++ -O3 -std=c++17 -ffp-contract=fast -Icpp bench/kernel_decode.cpp -o /tmp/kernel_decode && /tmp/kernel_decode
//
// What it shows: the kernel is bound by the bytes of the maps, not by multiply-adds.
#include "kernels.h"

#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

using namespace lingalign;

int main() {
    const int d = 640, n_layer = 18, rounds = 30;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    std::vector<std::vector<float>> maps(n_layer, std::vector<float>((size_t) d * d));
    std::vector<std::vector<uint16_t>> halves(n_layer, std::vector<uint16_t>((size_t) d * d, 0x2000));
    for (auto & m : maps) {
        for (auto & x : m) {
            x = 0.01f * normal(rng);
        }
    }
    // The maps' values do not matter for the timing; the layout does: the hook's panel packing.
    std::vector<float> h(d, 1.0f), y(d), scratch(f16_scratch_floats(d));
    std::vector<unsigned char> other(300u << 20, 1);
    volatile unsigned sink = 0;

    double best[2][2] = {{1e18, 1e18}, {1e18, 1e18}};  // [cold][f16], microseconds per token
    for (int r = 0; r < rounds; ++r) {
        for (int cold = 0; cold < 2; ++cold) {
            for (int f16 = 0; f16 < 2; ++f16) {
                auto token = [&] {
                    for (int il = 0; il < n_layer; ++il) {
                        if (f16) {
                            matvec_packed_f16(h.data(), d, halves[il].data(), d, 0, d, y.data(), scratch.data());
                        } else {
                            matvec_packed(h.data(), d, maps[il].data(), d, 0, d, y.data());
                        }
                    }
                };
                if (cold) {
                    unsigned s = 0;
                    for (size_t i = 0; i < other.size(); i += 64) {
                        s += ++other[i];
                    }
                    sink = sink + s;
                } else {
                    token();  // untimed: the maps are now in cache
                }
                const auto t0 = std::chrono::steady_clock::now();
                token();
                const auto t1 = std::chrono::steady_clock::now();
                best[cold][f16] = std::min(best[cold][f16], std::chrono::duration<double, std::micro>(t1 - t0).count());
            }
        }
    }
    const double mb32 = n_layer * (double) d * d * 4 / 1e6;
    std::printf("18 maps 640x640, one row, 1 thread, best of %d rounds\n", rounds);
    std::printf("%-6s %-5s %10s %10s\n", "cache", "dtype", "us/token", "GB/s");
    for (int cold = 0; cold < 2; ++cold) {
        for (int f16 = 0; f16 < 2; ++f16) {
            const double mb = f16 ? mb32 / 2 : mb32;
            std::printf("%-6s %-5s %10.0f %10.1f\n", cold ? "cold" : "warm", f16 ? "f16" : "f32", best[cold][f16],
                        mb * 1e3 / best[cold][f16]);
        }
    }
    std::printf("ratios: cold/warm f32 %.2f, f16 %.2f; f16/f32 time warm %.2f, cold %.2f\n", best[1][0] / best[0][0],
                best[1][1] / best[0][1], best[0][1] / best[0][0], best[1][1] / best[1][0]);
    return 0;
}
