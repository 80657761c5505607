// How the hook stores its maps: packed by column panels, the layouts its kernels stream
// (kernels.h, kernels_q4.h), and the way back to a dense map (device_maps.cpp puts maps on a GPU).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lingalign {

constexpr int kPanel = 16;  // columns of M per panel

// Panel layout: the columns p0..p0+w of M [K x ncols] (w = min(kPanel, ncols - p0), p0 a
// multiple of kPanel) are the row-major [K x w] block at offset p0 * K, so the packed map has
// exactly K * ncols elements.
template <typename T> inline void pack_panels(const T * M, int K, int ncols, T * out) {
    for (int p0 = 0; p0 < ncols; p0 += kPanel) {
        const int w = std::min(kPanel, ncols - p0);
        T * panel = out + (size_t) p0 * K;
        for (int j = 0; j < K; ++j) {
            std::copy(M + (size_t) j * ncols + p0, M + (size_t) j * ncols + p0 + w, panel + (size_t) j * w);
        }
    }
}

// The transpose of a map packed by pack_panels: wt [ncols x K] row-major, wt[c, j] = M[j, c].
template <typename T> inline void transpose_panels(const T * packed, int K, int ncols, T * wt) {
    for (int p0 = 0; p0 < ncols; p0 += kPanel) {
        const int w = std::min(kPanel, ncols - p0);
        const T * panel = packed + (size_t) p0 * K;
        for (int j = 0; j < K; ++j) {
            for (int c = 0; c < w; ++c) {
                wt[(size_t) (p0 + c) * K + j] = panel[(size_t) j * w + c];
            }
        }
    }
}

// Packed layout (pack_q4_panels): K is padded to Kp (a multiple of 32) and ncols to a multiple of
// kPanel with zeros; panel p (columns 16p..16p+15) is Kp * 8 contiguous bytes; in it, rows
// 4g..4g+3 are 32 bytes, byte 4c + t holding row 4g + t of column c in its low nibble and of
// column c + 8 in its high one, each as value + 8 (0..15). maddubs then sums the 4 rows of each
// column in one 32-bit lane: 8 columns per register, the low and the high nibbles.
constexpr int kQ4Block = 32;  // values per quantization block of a row h

inline int q4_padded_rows(int K) {
    return (K + kQ4Block - 1) / kQ4Block * kQ4Block;
}

inline int q4_padded_cols(int ncols) {
    return (ncols + kPanel - 1) / kPanel * kPanel;
}

// The byte holding Q[j, c] in the packed layout (the low nibble when c % kPanel < 8).
inline size_t q4_panel_byte(int Kp, int j, int c) {
    return (size_t) (c / kPanel) * Kp * 8 + (size_t) (j / 4) * 32 + (c % kPanel % 8) * 4 + j % 4;
}

// The file layout (two columns per byte: byte [j, k] holds column 2k in its low nibble and
// 2k + 1 in its high one, each as value + 8; ncols even) into the kernels' panel layout.
inline std::vector<uint8_t> pack_q4_panels(const uint8_t * file, int K, int ncols) {
    const int Kp = q4_padded_rows(K);
    const int Np = q4_padded_cols(ncols);
    std::vector<uint8_t> out((size_t) Np * Kp / 2, 0x88);  // padding: value 0 in both nibbles
    for (int j = 0; j < K; ++j) {
        const uint8_t * row = file + (size_t) j * (ncols / 2);
        for (int c = 0; c < ncols; ++c) {
            const uint8_t nibble = (c % 2 == 0) ? (row[c / 2] & 0x0F) : (row[c / 2] >> 4);
            uint8_t & byte = out[q4_panel_byte(Kp, j, c)];
            byte = c % kPanel < 8 ? (uint8_t) ((byte & 0xF0) | nibble) : (uint8_t) ((byte & 0x0F) | (nibble << 4));
        }
    }
    return out;
}

// Q[j, c] (-8..7) of a 4-bit map packed by pack_q4_panels with Kp = q4_padded_rows(K).
inline int q4_panel_value(const uint8_t * packed, int Kp, int j, int c) {
    const uint8_t byte = packed[q4_panel_byte(Kp, j, c)];
    return (c % kPanel < 8 ? (byte & 0x0F) : (byte >> 4)) - 8;
}

} // namespace lingalign
