// Decode's map kernel alone: one 640-wide row through 18 full-rank 640x640 maps (Gemma 3 270M's
// shape), stored as float32, float16, int8 and 4 bits (the hook's packed panel layouts; 4 bits
// with the row quantized per block of 32 and integer dot products, kernels_q4.h), with the maps in
// cache ("warm") and after 300 MB of other data has been read ("cold", as after a decode step
// streamed the model's weights). Prints microseconds per token and the ratios, measured side by
// side in one run; one thread.
//
//     g++ -O3 -std=c++17 -ffp-contract=fast -Icpp bench/kernel_decode.cpp -o /tmp/kernel_decode && /tmp/kernel_decode
//
// What it shows: the float kernels are bound by the bytes of the maps, not by multiply-adds; the
// 4-bit integer kernel reads half of 8 bits' bytes with far fewer instructions per value.
#include "kernels.h"
#include "kernels_q4.h"

#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

using namespace lingalign;

int main() {
    const int d = 640, n_layer = 18, rounds = 30;
    constexpr int n_types = 4;
    const char * names[n_types] = {"f32", "f16", "q8", "q4"};
    const double bytes_per_value[n_types] = {4, 2, 1, 0.5};
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    // The values do not matter for the timing, only the bytes and the layout.
    std::vector<std::vector<float>> maps(n_layer, std::vector<float>((size_t) d * d));
    std::vector<std::vector<uint16_t>> halves(n_layer, std::vector<uint16_t>((size_t) d * d, 0x2000));
    std::vector<std::vector<int8_t>> bytes(n_layer, std::vector<int8_t>((size_t) d * d, 3));
    const std::vector<uint8_t> nibbles_file((size_t) d * d / 2, 0x9A);
    std::vector<std::vector<uint8_t>> nibbles(n_layer, pack_q4_panels(nibbles_file.data(), d, d));
    const int Kp = q4_padded_rows(d);
    std::vector<int8_t> hq(Kp);
    std::vector<float> hs(Kp / kQ4Block);
    std::vector<int32_t> hsum(Kp / kQ4Block);
    for (auto & m : maps) {
        for (auto & x : m) {
            x = 0.01f * normal(rng);
        }
    }
    std::vector<float> h(d, 1.0f), y(d), scratch(panel_scratch_floats(d));
    std::vector<unsigned char> other(300u << 20, 1);
    volatile unsigned sink = 0;

    // [wide][cold][dtype], microseconds per token; wide = 1: AVX-512 where the CPU has it
    double best[2][2][n_types];
    for (auto & plane : best) {
        for (auto & row : plane) {
            for (auto & x : row) {
                x = 1e18;
            }
        }
    }
    const int n_wide = cpu_has_avx512f() ? 2 : 1;
    for (int r = 0; r < rounds; ++r) {
        for (int wide = 0; wide < n_wide; ++wide) {
        wide_kernels().store(wide != 0);
        for (int cold = 0; cold < 2; ++cold) {
            for (int dtype = 0; dtype < n_types; ++dtype) {
                auto token = [&] {
                    for (int il = 0; il < n_layer; ++il) {
                        if (dtype == 0) {
                            matvec_packed(h.data(), d, maps[il].data(), d, 0, d, y.data(), scratch.data());
                        } else if (dtype == 1) {
                            matvec_packed(h.data(), d, halves[il].data(), d, 0, d, y.data(), scratch.data());
                        } else if (dtype == 2) {
                            matvec_packed(h.data(), d, bytes[il].data(), d, 0, d, y.data(), scratch.data());
                        } else {
                            quantize_row_blocks(h.data(), d, hq.data(), hs.data(), hsum.data());
                            matmul_q4(hq.data(), hs.data(), hsum.data(), 1, Kp, nibbles[il].data(), d, 0, d, y.data(), d,
                                      false);
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
                best[wide][cold][dtype] =
                    std::min(best[wide][cold][dtype], std::chrono::duration<double, std::micro>(t1 - t0).count());
            }
        }
        }
    }
    const double values = n_layer * (double) d * d;
    std::printf("18 maps 640x640, one row, 1 thread, best of %d rounds\n", rounds);
    std::printf("%-7s %-6s %-5s %10s %10s %14s\n", "kernel", "cache", "dtype", "us/token", "GB/s", "time vs f32");
    for (int wide = 0; wide < n_wide; ++wide) {
        for (int cold = 0; cold < 2; ++cold) {
            for (int dtype = 0; dtype < n_types; ++dtype) {
                const double us = best[wide][cold][dtype];
                std::printf("%-7s %-6s %-5s %10.0f %10.1f %14.2f\n", wide ? "avx512" : "avx2", cold ? "cold" : "warm",
                            names[dtype], us, values * bytes_per_value[dtype] / 1e3 / us, us / best[wide][cold][0]);
            }
        }
    }
    return 0;
}
