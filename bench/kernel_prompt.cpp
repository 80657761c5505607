// Prompt processing's map kernels alone: a ubatch of 256 rows (a 256-token prompt) through 18
// full-rank 640x640 maps (Gemma 3 270M's shape), one thread, best of 10 rounds, each path side by
// side in one run:
//   portable  matmul_columns, the portable C++ (4 rows x 16 columns, compiled for AVX2/FMA);
//   avx2      matmul_panel_avx2 (6 rows x 16 columns in 12 registers);
//   avx512    matmul_panels_avx512 (12 rows x 32 columns in 24 registers), where the CPU has it;
//   q4-avx2   matmul_q4 on the quantized rows (quantization included), AVX2 maddubs, 2 rows at a time;
//   q4-vnni   the same with VNNI's vpdpbusd, 4 rows at a time, where the CPU has it.
// Every float32 path must give the same bits, and both 4-bit paths; the program says whether they did.
// GFLOP/s counts 2 x rows x 640 x 640 x 18 for every path, the 4-bit ones included.
//
//     g++ -O3 -std=c++17 -ffp-contract=fast -Icpp bench/kernel_prompt.cpp -o /tmp/kernel_prompt && /tmp/kernel_prompt
#include "kernels.h"
#include "kernels_q4.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace lingalign;

int main() {
    const int d = 640, n = 256, n_layer = 18, rounds = 10;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    std::vector<float> H((size_t) n * d);
    for (auto & x : H) {
        x = normal(rng);
    }
    std::vector<const float *> rows(n);
    for (int r = 0; r < n; ++r) {
        rows[r] = H.data() + (size_t) r * d;
    }
    std::vector<std::vector<float>> maps(n_layer, std::vector<float>((size_t) d * d));
    for (auto & m : maps) {
        std::vector<float> plain((size_t) d * d);
        for (auto & x : plain) {
            x = 0.01f * normal(rng);
        }
        pack_panels(plain.data(), d, d, m.data());
    }
    const std::vector<uint8_t> nibbles_file((size_t) d * d / 2, 0x9A);
    std::vector<std::vector<uint8_t>> nibbles(n_layer, pack_q4_panels(nibbles_file.data(), d, d));
    const int Kp = q4_padded_rows(d);
    std::vector<int8_t> hq((size_t) n * Kp);
    std::vector<float> hs((size_t) n * Kp / kQ4Block);
    std::vector<int32_t> hsum((size_t) n * Kp / kQ4Block);

    const char * names[] = {"portable", "avx2", "avx512", "q4-avx2", "q4-vnni"};
    constexpr int n_paths = 5;
    const bool available[n_paths] = {true, cpu_has_avx2_fma(), cpu_has_avx512f(), cpu_has_avx2_fma(),
                                     cpu_vnni() != kVnniNone};
    std::vector<std::vector<float>> Y(n_paths, std::vector<float>((size_t) n * d));
    double best[n_paths];
    for (auto & b : best) {
        b = 1e18;
    }
    for (int round = 0; round < rounds; ++round) {
        for (int path = 0; path < n_paths; ++path) {
            if (!available[path]) {
                continue;
            }
            float * y = Y[path].data();
            const auto t0 = std::chrono::steady_clock::now();
            for (int il = 0; il < n_layer; ++il) {
                const float * P = maps[il].data();
                for (int p0 = 0; p0 < d; p0 += 2 * kPanel) {
                    const float * M = P + (size_t) p0 * d;
                    if (path == 0) {
                        matmul_columns(rows.data(), n, d, M, kPanel, 0, kPanel, y + p0, d);
                        matmul_columns(rows.data(), n, d, M + kPanel * d, kPanel, 0, kPanel, y + p0 + kPanel, d);
                    } else if (path == 1) {
                        for (int q = 0; q < 2; ++q) {
                            const float * panel = M + (size_t) q * kPanel * d;
                            const int done = matmul_panel_avx2(rows.data(), n, d, panel, y + p0 + q * kPanel, d);
                            matmul_columns(rows.data() + done, n - done, d, panel, kPanel, 0, kPanel,
                                           y + (size_t) done * d + p0 + q * kPanel, d);
                        }
                    } else if (path == 2) {
                        const int done = matmul_panels_avx512<2>(rows.data(), n, d, M, y + p0, d);
                        for (int q = 0; q < 2; ++q) {
                            matmul_columns(rows.data() + done, n - done, d, M + (size_t) q * kPanel * d, kPanel, 0,
                                           kPanel, y + (size_t) done * d + p0 + q * kPanel, d);
                        }
                    }
                }
                if (path >= 3) {
                    wide_kernels().store(path == 4);
                    quantize_rows(rows.data(), 0, n, d, hq.data(), hs.data(), hsum.data(), false);
                    matmul_q4(hq.data(), hs.data(), hsum.data(), n, Kp, nibbles[il].data(), d, 0, d, y, d, false);
                }
            }
            const auto t1 = std::chrono::steady_clock::now();
            best[path] = std::min(best[path], std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
    }
    const double flop = 2.0 * n * d * (double) d * n_layer;
    std::printf("%d rows x 18 maps 640x640, 1 thread, best of %d rounds\n", n, rounds);
    std::printf("%-9s %9s %9s %12s\n", "path", "ms", "GFLOP/s", "vs portable");
    for (int path = 0; path < n_paths; ++path) {
        if (!available[path]) {
            std::printf("%-9s (not on this CPU)\n", names[path]);
            continue;
        }
        std::printf("%-9s %9.2f %9.1f %11.2fx\n", names[path], best[path], flop / best[path] / 1e6, best[0] / best[path]);
    }
    bool same = true;
    for (int path = 1; path < 3; ++path) {
        if (available[path]) {
            same = same && std::memcmp(Y[0].data(), Y[path].data(), Y[0].size() * sizeof(float)) == 0;
        }
    }
    std::printf("float32 paths bit-identical: %s\n", same ? "yes" : "NO");
    bool same_q4 = true;
    if (available[3] && available[4]) {
        same_q4 = std::memcmp(Y[3].data(), Y[4].data(), Y[3].size() * sizeof(float)) == 0;
        std::printf("4-bit paths bit-identical: %s\n", same_q4 ? "yes" : "NO");
    }
    return same && same_q4 ? 0 : 1;
}
