// Prototype, not used by the hook: would integer dot products speed up decode's 8-bit maps, and
// what would 4-bit maps give? Decode's one row h is quantized to int8 per block of 32 (a scale
// each, as llama.cpp quantizes activations for its own quantized weights) and multiplied with
// AVX2 maddubs against
//   - "q8 dot": int8 maps (64 bytes per 4 rows x 16 columns of a panel);
//   - "q4 dot": 4-bit maps (two values per byte, value - 8 in -7..7; 32 bytes per 4 x 16);
// against "q8 now", the hook's kernel (int8 converted to float in registers), for 18 maps of
// 640x640 (Gemma 3 270M), 1 and 2 OpenMP threads, maps in cache ("warm") and after 300 MB of other
// data ("cold", as in decode, where the model's weights stream through the cache every token).
// Timing only: the map bytes are constants.
//
//     g++ -O3 -fopenmp -std=c++17 -ffp-contract=fast -Icpp bench/kernel_intdot.cpp -o /tmp/kernel_intdot && /tmp/kernel_intdot
//
// What it showed (bench/results/kernel_intdot.txt): out of cache the 8-bit kernel is bound by
// bytes (integer dots are 2x faster warm, not cold); half the bytes (4 bits) is what helps.
#include "kernels.h"
#include <chrono>
#include <cstdio>
#include <vector>
#include <omp.h>
using namespace lingalign;
// q8 dot: panel contiguous, per quad 64 bytes (cols 0-7 x 4, cols 8-15 x 4)
__attribute__((target("avx2,fma"))) void mv_dot8(const int8_t * hq, const float * hs, int K, const int8_t * P, int c0, int c1, float * y) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int p0 = c0; p0 < c1; p0 += 64) {
        const int8_t * Q[4];
        for (int q = 0; q < 4; ++q) Q[q] = P + (size_t)(p0 + q*16) * K;
        __m256 a[4][2];
        for (int q=0;q<4;++q){a[q][0]=_mm256_setzero_ps();a[q][1]=_mm256_setzero_ps();}
        for (int b = 0; b < K/32; ++b) {
            __m256i s[4][2];
            for (int q=0;q<4;++q){s[q][0]=_mm256_setzero_si256();s[q][1]=_mm256_setzero_si256();}
            for (int j4 = b*8; j4 < b*8+8; ++j4) {
                int32_t w; std::memcpy(&w, hq + 4*j4, 4);
                const __m256i x = _mm256_set1_epi32(w);
                const __m256i ax = _mm256_sign_epi8(x, x);
                for (int q = 0; q < 4; ++q) {
                    const __m256i* m = reinterpret_cast<const __m256i*>(Q[q] + (size_t) j4 * 64);
                    __m256i m0 = _mm256_loadu_si256(m), m1 = _mm256_loadu_si256(m+1);
                    s[q][0] = _mm256_add_epi32(s[q][0], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(m0, x)), ones));
                    s[q][1] = _mm256_add_epi32(s[q][1], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(m1, x)), ones));
                }
            }
            const __m256 sc = _mm256_set1_ps(hs[b]);
            for (int q=0;q<4;++q){a[q][0]=_mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][0]),sc,a[q][0]);a[q][1]=_mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][1]),sc,a[q][1]);}
        }
        for (int q=0;q<4;++q){_mm256_storeu_ps(y+p0+q*16,a[q][0]);_mm256_storeu_ps(y+p0+q*16+8,a[q][1]);}
    }
}
// q4 dot: per quad 32 bytes: low nibbles cols 0-7 x4, high nibbles cols 8-15 x4; value = nib - 8
__attribute__((target("avx2,fma"))) void mv_dot4(const int8_t * hq, const float * hs, const int * hsum, int K, const uint8_t * P, int c0, int c1, float * y) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i low = _mm256_set1_epi8(0x0F);
    for (int p0 = c0; p0 < c1; p0 += 64) {
        const uint8_t * Q[4];
        for (int q = 0; q < 4; ++q) Q[q] = P + (size_t)(p0 + q*16) * K / 2;
        __m256 a[4][2];
        for (int q=0;q<4;++q){a[q][0]=_mm256_setzero_ps();a[q][1]=_mm256_setzero_ps();}
        for (int b = 0; b < K/32; ++b) {
            __m256i s[4][2];
            const __m256i off = _mm256_set1_epi32(8 * hsum[b]);
            for (int q=0;q<4;++q){s[q][0]=_mm256_sub_epi32(_mm256_setzero_si256(), off);s[q][1]=s[q][0];}
            for (int j4 = b*8; j4 < b*8+8; ++j4) {
                int32_t w; std::memcpy(&w, hq + 4*j4, 4);
                const __m256i x = _mm256_set1_epi32(w);
                for (int q = 0; q < 4; ++q) {
                    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Q[q] + (size_t) j4 * 32));
                    const __m256i m0 = _mm256_and_si256(v, low), m1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                    s[q][0] = _mm256_add_epi32(s[q][0], _mm256_madd_epi16(_mm256_maddubs_epi16(m0, x), ones));
                    s[q][1] = _mm256_add_epi32(s[q][1], _mm256_madd_epi16(_mm256_maddubs_epi16(m1, x), ones));
                }
            }
            const __m256 sc = _mm256_set1_ps(hs[b]);
            for (int q=0;q<4;++q){a[q][0]=_mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][0]),sc,a[q][0]);a[q][1]=_mm256_fmadd_ps(_mm256_cvtepi32_ps(s[q][1]),sc,a[q][1]);}
        }
        for (int q=0;q<4;++q){_mm256_storeu_ps(y+p0+q*16,a[q][0]);_mm256_storeu_ps(y+p0+q*16+8,a[q][1]);}
    }
}
int main() {
    const int d = 640, L = 18;
    std::vector<std::vector<int8_t>> b8(L, std::vector<int8_t>((size_t)d*d, 3)), bd(L, std::vector<int8_t>((size_t)d*d, 3));
    std::vector<std::vector<uint8_t>> b4(L, std::vector<uint8_t>((size_t)d*d/2, 0x9a));
    std::vector<float> h(d, 1.0f), y(d), hs(d/32, 1.0f/127);
    std::vector<int> hsum(d/32, 127*32);
    std::vector<int8_t> hq(d, 127);
    std::vector<float> scratch(2*panel_scratch_floats(d));
    std::vector<unsigned char> other(300u << 20, 1);
    volatile unsigned sink = 0;
    double best[2][3][2];
    for (auto&a:best) for(auto&b:a) for(auto&c:b) c=1e18;
    for (int r = 0; r < 20; ++r) for (int cold = 0; cold < 2; ++cold) for (int t = 0; t < 3; ++t) for (int nt = 1; nt <= 2; ++nt) {
        auto token = [&]{ for (int il=0; il<L; ++il) {
            #pragma omp parallel for num_threads(nt) schedule(static,1)
            for (int k = 0; k < nt; ++k) {
                int c0 = (10*k/nt)*64, c1 = (10*(k+1)/nt)*64;
                float* s = scratch.data() + k*panel_scratch_floats(d);
                if (t==0) matvec_packed(h.data(), d, b8[il].data(), d, c0, c1, y.data(), s);
                else if (t==1) mv_dot8(hq.data(), hs.data(), d, bd[il].data(), c0, c1, y.data());
                else mv_dot4(hq.data(), hs.data(), hsum.data(), d, b4[il].data(), c0, c1, y.data());
            } } };
        if (cold) {
            unsigned s=0;
            #pragma omp parallel for num_threads(2) reduction(+:s)
            for (size_t i=0;i<other.size();i+=64) s += ++other[i];
            sink = sink + s; } else token();
        auto t0 = std::chrono::steady_clock::now(); token(); auto t1 = std::chrono::steady_clock::now();
        best[cold][t][nt-1] = std::min(best[cold][t][nt-1], std::chrono::duration<double,std::micro>(t1-t0).count());
    }
    const char* nm[3]={"q8 now","q8 dot","q4 dot"};
    for (int cold=0;cold<2;++cold) for(int t=0;t<3;++t) printf("%s %s 1thr %.0f 2thr %.0f\n", cold?"cold":"warm", nm[t], best[cold][t][0], best[cold][t][1]);
    printf("(microseconds per token, best of 20 rounds; check value %.0f)\n", y[3]);
}
