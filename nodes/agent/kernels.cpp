// The agent's CPU kernels (kernels.py builds this file once per source and torch version).
//
// rtchat::int8_mm(x, weight, scale): x (m, k) float32 times an int8 weight (n, k) with one scale
// per output row → (m, n) float32. Decoding reads each weight once per token, so the kernel is
// built to stream weights: 16 int8 at a time widened to float32 and multiplied into float32
// accumulators, kRows weight rows per pass sharing the activation loads, up to kTile activation
// rows per pass sharing each widened weight, the scale applied once per output at the end.
//
// Every output is computed in one order whatever the shapes around it: a float32 accumulator of
// 16 lanes over k in steps of 16 (the last step masked), the lanes summed, times the scale. So a
// row of x gives the same outputs alone or beside others, and a fused projection's outputs are
// its parts' to the bit.
//
// rtchat.Decoder: one decoding step of a Llama decoder with int8 projections (fastpath.py) — one
// token after a KV cache — with no Python between the operations: ~25 torch ops per layer cost
// more in dispatch than their arithmetic at this size. The same computation as FastLlama's
// layers, with the same int8 products; norms, rotary embedding, attention and SiLU are written
// out here (float32 throughout, as the model's).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kRows = 4;                // weight rows per pass
constexpr int64_t kTile = 4;                // activation rows per pass
constexpr int64_t kGrainBytes = 32 * 1024;  // weight bytes a thread takes at least (a fork costs a few µs)
constexpr int64_t kChunk = 128;             // cache entries per attention task (fixed: results do not depend on threads)
// bytes ahead of the weights being read to prefetch into L2: the hardware prefetchers alone left
// the product at ~55 % of the memory's read bandwidth on the 2-core Xeon (5.9 GB/s a core against
// 10.7 GB/s with this, and 11 GB/s for a plain sum of the bytes)
constexpr int64_t kPrefetch = 8192;
constexpr int64_t kAhead = 32;  // cache entries ahead of the keys being read to prefetch (the values: into L2 as their keys are read)

// ------------------------------------------------------------------ int8 products

inline __m512 widen(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}

inline __m512 widen_masked(const int8_t* w, __mmask16 mask) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, w)));
}

inline float to_float(float s) { return s; }
inline float to_float(at::BFloat16 s) { return static_cast<float>(s); }

// y[t][r] = scale[r] · Σ_j w[r][j] · x[t][j] for R weight rows and T activation rows
template <int R, int T, typename S>
inline void tile(const float* x, int64_t ldx, const int8_t* w, int64_t k, const S* scale, float* y, int64_t ldy) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    if ((j & 63) == 0)
      for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(w + r * k + j + kPrefetch), _MM_HINT_T1);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x + t * ldx + j);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = widen(w + r * k + j);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (j < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - j)) - 1);
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(mask, x + t * ldx + j);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = widen_masked(w + r * k + j, mask);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]) * to_float(scale[r]);
}

template <int R, typename S>
inline void rows_block(const float* x, int64_t m, int64_t k, const int8_t* w, const S* scale, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + kTile <= m; i += kTile) tile<R, kTile>(x + i * k, k, w, k, scale, y + i * n, n);
  switch (m - i) {
    case 3: tile<R, 3>(x + i * k, k, w, k, scale, y + i * n, n); break;
    case 2: tile<R, 2>(x + i * k, k, w, k, scale, y + i * n, n); break;
    case 1: tile<R, 1>(x + i * k, k, w, k, scale, y + i * n, n); break;
    default: break;
  }
}

// y (m, n) = x (m, k) · w (n, k)ᵀ · scale, the weight rows split across torch's threads
template <typename S>
void int8_product(const float* x, int64_t m, int64_t k, const int8_t* w, const S* scale, float* y, int64_t n) {
  const int64_t blocks = (n + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(1, kRows * k));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    int64_t r = b0 * kRows;
    const int64_t end = std::min(n, b1 * kRows);
    for (; r + kRows <= end; r += kRows) rows_block<kRows>(x, m, k, w + r * k, scale + r, y + r, n);
    for (; r < end; ++r) rows_block<1>(x, m, k, w + r * k, scale + r, y + r, n);
  });
}

void int8_product(const float* x, int64_t m, int64_t k, const at::Tensor& weight, const at::Tensor& scale, float* y) {
  const int64_t n = weight.size(0);
  if (scale.scalar_type() == at::kBFloat16)
    int8_product(x, m, k, weight.data_ptr<int8_t>(), scale.data_ptr<at::BFloat16>(), y, n);
  else
    int8_product(x, m, k, weight.data_ptr<int8_t>(), scale.data_ptr<float>(), y, n);
}

void check_int8(const at::Tensor& weight, const at::Tensor& scale, const char* what) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar && weight.is_contiguous(), what,
              ": the weight must be a contiguous int8 matrix");
  TORCH_CHECK(scale.numel() == weight.size(0) && scale.is_contiguous() &&
                  (scale.scalar_type() == at::kBFloat16 || scale.scalar_type() == at::kFloat),
              what, ": one bfloat16 or float32 scale per weight row");
}

at::Tensor int8_mm(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& scale) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.size(1) == weight.size(1), "int8_mm: x (m, k) and weight (n, k), got ",
              x_in.sizes(), " and ", weight.sizes());
  check_int8(weight, scale, "int8_mm");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({x.size(0), weight.size(0)}, x.options());
  int8_product(x.data_ptr<float>(), x.size(0), x.size(1), weight, scale, y.data_ptr<float>());
  return y;
}

// ------------------------------------------------------------------ float32 vector helpers

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// e^x to ~1 ulp (Cephes' expf): 2^n · p(r), x = n·ln 2 + r, |r| ≤ ln 2 / 2
inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // below: 0 after scaling
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));    // above: inf after scaling
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline float dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 mask = tail_mask(n - j);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + j), _mm512_maskz_loadu_ps(mask, b + j), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// out += a · x
inline void axpy(float a, const float* x, float* out, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 mask = tail_mask(n - j);
    _mm512_mask_storeu_ps(out + j, mask,
                          _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mask, x + j), _mm512_maskz_loadu_ps(mask, out + j)));
  }
}

// out = x / sqrt(mean(x²) + eps) · weight (LlamaRMSNorm in float32)
void rms_norm(const float* x, const float* weight, float eps, float* out, int64_t d) {
  const float r = 1.0f / std::sqrt(dot(x, x, d) / static_cast<float>(d) + eps);
  for (int64_t j = 0; j < d; ++j) out[j] = weight[j] * (x[j] * r);
}

// ------------------------------------------------------------------ one decoding step

struct Decoder : torch::CustomClassHolder {
  // per layer: the two norms' weights and the fused projections (int8 weight, scale)
  std::vector<at::Tensor> ln1, ln2, qkv_w, qkv_s, o_w, o_s, gate_up_w, gate_up_s, down_w, down_s;
  at::Tensor embed, norm, head_w, head_s, inv_freq;
  int64_t n_heads, n_kv, head_dim, d, inter;
  double eps, rope_scaling, scaling;

  Decoder(std::vector<at::Tensor> ln1, std::vector<at::Tensor> ln2, std::vector<at::Tensor> qkv_w,
          std::vector<at::Tensor> qkv_s, std::vector<at::Tensor> o_w, std::vector<at::Tensor> o_s,
          std::vector<at::Tensor> gate_up_w, std::vector<at::Tensor> gate_up_s, std::vector<at::Tensor> down_w,
          std::vector<at::Tensor> down_s, at::Tensor embed, at::Tensor norm, at::Tensor head_w, at::Tensor head_s,
          at::Tensor inv_freq, int64_t n_heads, int64_t n_kv, int64_t head_dim, double eps, double rope_scaling,
          double scaling)
      : ln1(ln1), ln2(ln2), qkv_w(qkv_w), qkv_s(qkv_s), o_w(o_w), o_s(o_s), gate_up_w(gate_up_w),
        gate_up_s(gate_up_s), down_w(down_w), down_s(down_s), embed(embed.contiguous()), norm(norm.contiguous()),
        head_w(head_w), head_s(head_s), inv_freq(inv_freq.to(at::kFloat).contiguous()), n_heads(n_heads), n_kv(n_kv),
        head_dim(head_dim), eps(eps), rope_scaling(rope_scaling), scaling(scaling) {
    d = this->embed.size(1);
    inter = gate_up_w.empty() ? 0 : gate_up_w[0].size(0) / 2;
    const size_t layers = ln1.size();
    TORCH_CHECK(this->embed.scalar_type() == at::kFloat, "Decoder: a float32 model");
    TORCH_CHECK(ln2.size() == layers && qkv_w.size() == layers && o_w.size() == layers && gate_up_w.size() == layers &&
                    down_w.size() == layers, "Decoder: one of each weight per layer");
    for (size_t l = 0; l < layers; ++l) {
      check_int8(this->qkv_w[l], this->qkv_s[l], "Decoder qkv");
      check_int8(this->o_w[l], this->o_s[l], "Decoder o");
      check_int8(this->gate_up_w[l], this->gate_up_s[l], "Decoder gate_up");
      check_int8(this->down_w[l], this->down_s[l], "Decoder down");
      TORCH_CHECK(this->qkv_w[l].size(0) == (n_heads + 2 * n_kv) * head_dim && this->qkv_w[l].size(1) == d &&
                      this->o_w[l].size(0) == d && this->o_w[l].size(1) == n_heads * head_dim &&
                      this->gate_up_w[l].size(0) == 2 * inter && this->gate_up_w[l].size(1) == d &&
                      this->down_w[l].size(0) == d && this->down_w[l].size(1) == inter,
                  "Decoder: projection shapes do not fit the model's sizes");
      for (at::Tensor* norm_weight : {&this->ln1[l], &this->ln2[l]}) {
        TORCH_CHECK(norm_weight->numel() == d && norm_weight->scalar_type() == at::kFloat, "Decoder: float32 norm weights");
        *norm_weight = norm_weight->contiguous();
      }
    }
    check_int8(this->head_w, this->head_s, "Decoder head");
    TORCH_CHECK(this->head_w.size(1) == d, "Decoder: the output layer takes ", this->head_w.size(1), " inputs, not ", d);
    TORCH_CHECK(this->norm.numel() == d && this->norm.scalar_type() == at::kFloat, "Decoder: float32 norm weights");
    TORCH_CHECK(n_kv > 0 && n_heads % n_kv == 0 && this->inv_freq.numel() == head_dim / 2, "Decoder: head counts or rotary sizes");
  }

  // q (n_heads · head_dim) and k (n_kv · head_dim) rotated in place at position pos (transformers'
  // rotary embedding: x·cos + rotate_half(x)·sin, cos and sin of pos · inv_freq, each half twice)
  void rotate(float* qk, int64_t heads, int64_t pos) const {
    const int64_t half = head_dim / 2;
    const float* inv = inv_freq.data_ptr<float>();
    std::vector<float> cos(half), sin(half);
    for (int64_t i = 0; i < half; ++i) {
      const float f = static_cast<float>(pos) * inv[i];
      cos[i] = std::cos(f) * static_cast<float>(rope_scaling);
      sin[i] = std::sin(f) * static_cast<float>(rope_scaling);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* x = qk + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos[i] + (-b) * sin[i];
        x[i + half] = b * cos[i] + a * sin[i];
      }
    }
  }

  // out (n_heads · head_dim) = softmax(q·Kᵀ · scaling) · V over the first n entries of one layer's
  // cache (1, n_kv, room, head_dim); tasks of kChunk entries per key/value head, merged in order
  void attend(const float* q, const at::Tensor& keys, const at::Tensor& values, int64_t n, float* out) const {
    const int64_t group = n_heads / n_kv, chunks = (n + kChunk - 1) / kChunk;
    const int64_t k_stride = keys.stride(1), v_stride = values.stride(1);
    const float* kp = keys.data_ptr<float>();
    const float* vp = values.data_ptr<float>();
    // per task and query head: the chunk's max score, its sum of exponentials, its weighted values
    std::vector<float> maxes(n_kv * chunks * group), sums(n_kv * chunks * group);
    std::vector<float> partial(n_kv * chunks * group * head_dim, 0.0f);
    at::parallel_for(0, n_kv * chunks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> scores(group * kChunk);
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t g = task / chunks, c = task % chunks;
        const int64_t begin = c * kChunk, len = std::min(n, begin + kChunk) - begin;
        const float* kh = kp + g * k_stride + begin * head_dim;
        const float* vh = vp + g * v_stride + begin * head_dim;
        const float* qg = q + g * group * head_dim;
        for (int64_t j = 0; j < len; ++j) {  // each key read once for the group's query heads
          for (int64_t b = 0; b < head_dim; b += 16) {
            _mm_prefetch(reinterpret_cast<const char*>(kh + (j + kAhead) * head_dim + b), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(vh + j * head_dim + b), _MM_HINT_T1);
          }
          for (int64_t h = 0; h < group; ++h)
            scores[h * kChunk + j] = dot(qg + h * head_dim, kh + j * head_dim, head_dim) * static_cast<float>(scaling);
        }
        for (int64_t h = 0; h < group; ++h) {
          float* s = scores.data() + h * kChunk;
          const float top = *std::max_element(s, s + len);
          __m512 total = _mm512_setzero_ps();
          for (int64_t j = 0; j < len; j += 16) {
            const __mmask16 mask = tail_mask(len - j);
            const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, s + j), _mm512_set1_ps(top)));
            _mm512_mask_storeu_ps(s + j, mask, e);
            total = _mm512_add_ps(total, _mm512_maskz_mov_ps(mask, e));
          }
          maxes[task * group + h] = top;
          sums[task * group + h] = _mm512_reduce_add_ps(total);
        }
        float* acc = partial.data() + task * group * head_dim;
        for (int64_t j = 0; j < len; ++j) {  // each value read once for the group's query heads
          for (int64_t h = 0; h < group; ++h) axpy(scores[h * kChunk + j], vh + j * head_dim, acc + h * head_dim, head_dim);
        }
      }
    });
    for (int64_t g = 0; g < n_kv; ++g) {
      for (int64_t h = 0; h < group; ++h) {
        float top = -INFINITY;
        for (int64_t c = 0; c < chunks; ++c) top = std::max(top, maxes[(g * chunks + c) * group + h]);
        float* o = out + (g * group + h) * head_dim;
        std::fill(o, o + head_dim, 0.0f);
        float total = 0.0f;
        for (int64_t c = 0; c < chunks; ++c) {
          const int64_t slot = (g * chunks + c) * group + h;
          const float w = std::exp(maxes[slot] - top);
          total += w * sums[slot];
          axpy(w, partial.data() + slot * head_dim, o, head_dim);
        }
        const float inv = 1.0f / total;
        for (int64_t j = 0; j < head_dim; ++j) o[j] *= inv;
      }
    }
  }

  // token at a position after n cached entries: writes its key and value at index n of every
  // layer's buffers (which must have room) → (last-layer state after the final norm (1, d),
  // logits (1, vocab) or an empty tensor)
  std::tuple<at::Tensor, at::Tensor> step(int64_t token, int64_t position, int64_t n, std::vector<at::Tensor> keys,
                                          std::vector<at::Tensor> values, bool logits) {
    const size_t layers = ln1.size();
    TORCH_CHECK(keys.size() == layers && values.size() == layers, "Decoder.step: one key and value buffer per layer");
    TORCH_CHECK(token >= 0 && token < embed.size(0), "Decoder.step: token ", token, " out of range");
    const int64_t q_size = n_heads * head_dim, kv_size = n_kv * head_dim;
    for (size_t l = 0; l < layers; ++l) {
      for (const at::Tensor* t : {&keys[l], &values[l]}) {
        TORCH_CHECK(t->dim() == 4 && t->scalar_type() == at::kFloat && t->size(1) == n_kv && t->size(2) > n &&
                        t->size(3) == head_dim && t->stride(3) == 1 && t->stride(2) == head_dim,
                    "Decoder.step: key/value buffers (1, n_kv, room > n, head_dim) float32 with room for the token");
      }
    }
    at::NoGradGuard no_grad;  // the norms' and embedding's weights are parameters; nothing here is differentiated
    auto opts = embed.options();
    at::Tensor x_t = embed[token].clone().view({1, d});
    float* x = x_t.data_ptr<float>();
    std::vector<float> h(std::max(d, inter)), qkv(q_size + 2 * kv_size), att(q_size), gu(2 * inter), y(d);
    for (size_t l = 0; l < layers; ++l) {
      rms_norm(x, ln1[l].data_ptr<float>(), static_cast<float>(eps), h.data(), d);
      int8_product(h.data(), 1, d, qkv_w[l], qkv_s[l], qkv.data());
      rotate(qkv.data(), n_heads + n_kv, position);
      float* kbuf = keys[l].data_ptr<float>();
      float* vbuf = values[l].data_ptr<float>();
      for (int64_t g = 0; g < n_kv; ++g) {
        std::copy_n(qkv.data() + q_size + g * head_dim, head_dim, kbuf + g * keys[l].stride(1) + n * head_dim);
        std::copy_n(qkv.data() + q_size + kv_size + g * head_dim, head_dim, vbuf + g * values[l].stride(1) + n * head_dim);
      }
      attend(qkv.data(), keys[l], values[l], n + 1, att.data());
      int8_product(att.data(), 1, q_size, o_w[l], o_s[l], y.data());
      for (int64_t j = 0; j < d; ++j) x[j] += y[j];
      rms_norm(x, ln2[l].data_ptr<float>(), static_cast<float>(eps), h.data(), d);
      int8_product(h.data(), 1, d, gate_up_w[l], gate_up_s[l], gu.data());
      for (int64_t j = 0; j < inter; j += 16) {  // silu(gate) · up
        const __mmask16 mask = tail_mask(inter - j);
        const __m512 g = _mm512_maskz_loadu_ps(mask, gu.data() + j);
        const __m512 u = _mm512_maskz_loadu_ps(mask, gu.data() + inter + j);
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_mask_storeu_ps(h.data() + j, mask, _mm512_mul_ps(silu, u));
      }
      int8_product(h.data(), 1, inter, down_w[l], down_s[l], y.data());
      for (int64_t j = 0; j < d; ++j) x[j] += y[j];
    }
    at::Tensor state = at::empty({1, d}, opts);
    rms_norm(x, norm.data_ptr<float>(), static_cast<float>(eps), state.data_ptr<float>(), d);
    at::Tensor out = at::empty({logits ? 1 : 0, logits ? head_w.size(0) : 0}, opts);
    if (logits) int8_product(state.data_ptr<float>(), 1, d, head_w, head_s, out.data_ptr<float>());
    return {state, out};
  }
};

}  // namespace

TORCH_LIBRARY(rtchat, lib) {
  lib.def("int8_mm(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  lib.class_<Decoder>("Decoder")
      .def(torch::init<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t,
                       int64_t, int64_t, double, double, double>())
      .def("step", &Decoder::step);
}

TORCH_LIBRARY_IMPL(rtchat, CPU, lib) {
  lib.impl("int8_mm", &int8_mm);
}
