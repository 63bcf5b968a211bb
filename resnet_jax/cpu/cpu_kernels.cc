// XLA FFI handlers for XLA:CPU (resnet_jax/cpu/extension.py builds and registers them):
// - NHWC/HWIO float32 convolutions computed by oneDNN: forward pass, input gradient and weight
//   gradient. XLA:CPU's own convolutions (Eigen) run about half as fast on ResNet layers, and
//   its weight-gradient lowering an order of magnitude slower (BENCHMARKS.md).
// - Training-mode batch norm, optionally followed by a residual addition and a ReLU, forward
//   and backward, in plain OpenMP loops (see BatchNormForward).
// - The gradient of a max pool (see MaxPoolBackward).
// - For inference, convolutions with batch norm folded into their weights and bias and the
//   residual addition and ReLU fused in as post-ops, on weights prepared once in the layout
//   the primitive reads (see Inference, PrepareWeights).
// - The weight gradient of dense convolutions with kernels larger than 1x1 and >= 32 input
//   channels (a ResNet's 3x3 layers) as im2col blocks times oneDNN's sgemm, faster than
//   oneDNN's own weight-gradient kernels there (see PatchesWeightGradient).
//
// Activations stay in XLA's NHWC buffers; weights are read and written in XLA's HWIO layout
// (grouped: the output channels of group g are g*O/G .. (g+1)*O/G - 1) and reordered to and
// from the blocked layout the primitive prefers. Primitives are built once per geometry and
// cached with their scratchpad; calls run one at a time (ExecutionMutex).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One oneDNN call at a time: XLA runs independent thunks (a layer's input and weight gradients)
// concurrently, and two OpenMP teams on the same cores spin against each other.
std::mutex& ExecutionMutex() {
  static std::mutex mu;
  return mu;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// One convolution: input (n, h, w, c), kernel (kh, kw, c / groups, o), output (n, oh, ow, o).
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, groups, sh, sw, ph0, ph1, pw0, pw1;

  std::string Key(char kind) const {
    std::ostringstream key;
    for (int64_t v : {n, h, w, c, kh, kw, o, oh, ow, groups, sh, sw, ph0, ph1, pw0, pw1})
      key << v << ',';
    return kind + key.str();
  }
  memory::desc Input() const {
    return memory::desc({n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc);
  }
  memory::desc Output() const {
    return memory::desc({n, o, oh, ow}, memory::data_type::f32, memory::format_tag::nhwc);
  }
  memory::dims WeightDims() const {
    if (groups == 1) return {o, c, kh, kw};
    return {groups, o / groups, c / groups, kh, kw};
  }
  // XLA's HWIO buffer described in oneDNN's logical (g, o, i, h, w) order.
  memory::desc WeightsHWIO() const {
    const int64_t cg = c / groups;
    memory::dims strides = {1, o, kw * cg * o, cg * o};  // o, i, h, w
    if (groups > 1) strides.insert(strides.begin(), o / groups);
    return memory::desc(WeightDims(), memory::data_type::f32, strides);
  }
  memory::desc WeightsAny() const {
    return memory::desc(WeightDims(), memory::data_type::f32, memory::format_tag::any);
  }
  memory::dims Strides() const { return {sh, sw}; }
  memory::dims PadLow() const { return {ph0, pw0}; }
  memory::dims PadHigh() const { return {ph1, pw1}; }

  dnnl::convolution_forward::primitive_desc Forward() const {
    return dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        Input(), WeightsAny(), Output(), Strides(), PadLow(), PadHigh(), UserScratchpad());
  }
};

struct Entry {
  dnnl::primitive conv;
  memory::desc weights;  // the weight layout the primitive uses
  bool reorder = false;  // whether that differs from XLA's HWIO
  dnnl::reorder to_primitive, from_primitive;
  memory scratchpad;
};

template <class PrimitiveDesc>
void Fill(Entry& e, const PrimitiveDesc& pd, const memory::desc& weights,
          const Geometry& g) {
  e.weights = weights;
  e.reorder = weights != g.WeightsHWIO();
  if (e.reorder) {
    e.to_primitive = dnnl::reorder(
        dnnl::reorder::primitive_desc(Engine(), g.WeightsHWIO(), Engine(), weights));
    e.from_primitive = dnnl::reorder(
        dnnl::reorder::primitive_desc(Engine(), weights, Engine(), g.WeightsHWIO()));
  }
  e.scratchpad = memory(pd.scratchpad_desc(), Engine());
}

// The cached primitive of kind E for `key`, built by `build` on first use (one cache per E).
template <class E>
E& Lookup(const std::string& key, const std::function<void(E&)>& build) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<E>> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<E>& slot = cache[key];
  if (!slot) {
    auto entry = std::make_unique<E>();
    build(*entry);
    slot = std::move(entry);
  }
  return *slot;
}

// The kernel `data` (XLA's HWIO buffer) in the layout the entry's primitive reads.
memory PrimitiveWeights(const Entry& e, dnnl::stream& stream, const Geometry& g, float* data) {
  memory weights(g.WeightsHWIO(), Engine(), data);
  if (!e.reorder) return weights;
  memory blocked(e.weights, Engine());
  e.to_primitive.execute(stream, weights, blocked);
  return blocked;
}

template <class Dims>
Geometry MakeGeometry(const Dims& x, const Dims& w, const Dims& y, int64_t groups, int64_t sh,
                      int64_t sw, int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  return {x[0], x[1], x[2], x[3], w[0], w[1], w[3], y[1], y[2], groups,
          sh,   sw,   ph0,  ph1,  pw0,  pw1};
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t groups, int64_t sh, int64_t sw,
                   int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  const Geometry g = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), groups, sh,
                                  sw, ph0, ph1, pw0, pw1);
  Entry& e = Lookup<Entry>(g.Key('f'), [&](Entry& e) {
    auto pd = g.Forward();
    e.conv = dnnl::convolution_forward(pd);
    Fill(e, pd, pd.weights_desc(), g);
  });
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  dnnl::stream stream(Engine());
  const memory weights = PrimitiveWeights(e, stream, g, w.typed_data());
  e.conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Input(), Engine(), x.typed_data())},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_DST, memory(g.Output(), Engine(), y->typed_data())},
                          {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
  stream.wait();
  return ffi::Error::Success();
}

ffi::Error InputGradient(F32 dy, F32 w, F32Out dx, int64_t groups, int64_t sh, int64_t sw,
                         int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  const Geometry g = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), groups,
                                  sh, sw, ph0, ph1, pw0, pw1);
  Entry& e = Lookup<Entry>(g.Key('d'), [&](Entry& e) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Input(), g.WeightsAny(), g.Output(),
        g.Strides(), g.PadLow(), g.PadHigh(), g.Forward(), UserScratchpad());
    e.conv = dnnl::convolution_backward_data(pd);
    Fill(e, pd, pd.weights_desc(), g);
  });
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  dnnl::stream stream(Engine());
  const memory weights = PrimitiveWeights(e, stream, g, w.typed_data());
  e.conv.execute(stream, {{DNNL_ARG_DIFF_DST, memory(g.Output(), Engine(), dy.typed_data())},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_DIFF_SRC, memory(g.Input(), Engine(), dx->typed_data())},
                          {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
  stream.wait();
  return ffi::Error::Success();
}

// The weight gradient as a sum over blocks of output pixels of patches^T @ dy, where a block's
// `patches` (im2col) holds each of its pixels' receptive fields, (kh, kw, c) in HWIO's order,
// so the product is the HWIO gradient itself. oneDNN's direct weight-gradient kernels
// (jit:avx2) run resnet50's 3x3 layers at ~45-90 GFLOP/s on the 2-core development machine,
// about half its forward kernels' rate; blocks of kPatchRows pixels, one sequential sgemm per
// block, each thread summing its own blocks, run them at ~70-130 and 1.2-2x faster
// (BENCHMARKS.md; of 32..256 rows, 256 (590 KB of patches at 64 channels) was the best on
// four of the seven shapes and within 15% on the others). With 16 channels oneDNN's kernels
// stay faster (resnet20's first stage: 8 against 11 ms), hence kPatchesMinChannels. For 1x1
// kernels, whose patches are x itself, the same blocks measured no faster than oneDNN's
// jit_1x1 kernels over resnet50's layers.
constexpr int64_t kPatchRows = 256;
constexpr int64_t kPatchesMinChannels = 32;

bool PatchesWeightGradientApplies(const Geometry& g) {
  return g.groups == 1 && g.kh * g.kw > 1 && g.c >= kPatchesMinChannels;
}

// Output pixel `pixel`'s receptive field, zero where it lies in the padding.
void GatherPatch(const Geometry& g, const float* x, int64_t pixel, float* out) {
  const int64_t image = pixel / (g.oh * g.ow), oy = pixel / g.ow % g.oh, ox = pixel % g.ow;
  const int64_t left = ox * g.sw - g.pw0;  // input column of tap j = 0
  // Taps j0 .. j1 - 1 of each kernel row lie inside the image: one contiguous span of x.
  const int64_t j0 = std::clamp<int64_t>(-left, 0, g.kw);
  const int64_t j1 = std::clamp<int64_t>(g.w - left, j0, g.kw);
  for (int64_t i = 0; i < g.kh; ++i, out += g.kw * g.c) {
    const int64_t row = oy * g.sh - g.ph0 + i;
    if (row < 0 || row >= g.h) {
      std::fill(out, out + g.kw * g.c, 0.f);
      continue;
    }
    std::fill(out, out + j0 * g.c, 0.f);
    std::memcpy(out + j0 * g.c, x + ((image * g.h + row) * g.w + left + j0) * g.c,
                (j1 - j0) * g.c * sizeof(float));
    std::fill(out + j1 * g.c, out + g.kw * g.c, 0.f);
  }
}

ffi::Error PatchesWeightGradient(const Geometry& g, const float* x, const float* dy,
                                 float* dw) {
  const int64_t k = g.kh * g.kw * g.c, size = k * g.o, pixels = g.n * g.oh * g.ow;
  const int64_t blocks = (pixels + kPatchRows - 1) / kPatchRows;
  std::fill(dw, dw + size, 0.f);
  // Thread 0 sums into dw, the others into their own buffers, added to dw in thread order
  // afterwards: the same result for the same number of threads.
  std::vector<std::unique_ptr<float[]>> partial(omp_get_max_threads());
  bool failed = false;
#pragma omp parallel reduction(|| : failed)
  {
    const int thread = omp_get_thread_num();
    std::unique_ptr<float[]> patches(new float[kPatchRows * k]);
    float* sum = dw;
    if (thread > 0) {
      partial[thread].reset(new float[size]());
      sum = partial[thread].get();
    }
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t first = b * kPatchRows, rows = std::min(kPatchRows, pixels - first);
      for (int64_t r = 0; r < rows; ++r) GatherPatch(g, x, first + r, patches.get() + r * k);
      // Inside a parallel region oneDNN's sgemm runs on the calling thread alone.
      failed |= dnnl_sgemm('T', 'N', k, g.o, rows, 1.f, patches.get(), k, dy + first * g.o,
                           g.o, 1.f, sum, g.o) != dnnl_success;
    }
  }
  if (failed) return ffi::Error(ffi::ErrorCode::kInternal, "oneDNN's sgemm failed");
  for (const auto& other : partial) {
    if (!other) continue;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < size; ++i) dw[i] += other[i];
  }
  return ffi::Error::Success();
}

ffi::Error WeightGradient(F32 x, F32 dy, F32Out dw, int64_t groups, int64_t sh, int64_t sw,
                          int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  const Geometry g = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), groups,
                                  sh, sw, ph0, ph1, pw0, pw1);
  if (PatchesWeightGradientApplies(g)) {
    std::lock_guard<std::mutex> lock(ExecutionMutex());
    return PatchesWeightGradient(g, x.typed_data(), dy.typed_data(), dw->typed_data());
  }
  Entry& e = Lookup<Entry>(g.Key('w'), [&](Entry& e) {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Input(), g.WeightsAny(), g.Output(),
        g.Strides(), g.PadLow(), g.PadHigh(), g.Forward(), UserScratchpad());
    e.conv = dnnl::convolution_backward_weights(pd);
    Fill(e, pd, pd.diff_weights_desc(), g);
  });
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  dnnl::stream stream(Engine());
  memory weights(g.WeightsHWIO(), Engine(), dw->typed_data());
  memory blocked = e.reorder ? memory(e.weights, Engine()) : weights;
  e.conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Input(), Engine(), x.typed_data())},
                          {DNNL_ARG_DIFF_DST, memory(g.Output(), Engine(), dy.typed_data())},
                          {DNNL_ARG_DIFF_WEIGHTS, blocked},
                          {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
  if (e.reorder) e.from_primitive.execute(stream, blocked, weights);
  stream.wait();
  return ffi::Error::Success();
}

// Training-mode batch normalisation of float32 NHWC data, viewed as (rows, channels), with
// per-channel statistics over the rows, optionally closed by what ends a residual block: the
// addition of the shortcut and a ReLU, y = max(bn(x) + residual, 0).
//
// XLA:CPU emits batch norm as ~16 separate loops (~21 passes over the activations), and the
// addition and ReLU as more. Here the forward pass reads x three times (mean, variance,
// normalisation), the backward pass its inputs twice (both sums in one pass, then the
// gradient): memory-bound, at ~12 GB/s on the 2-core development machine.
//
// Accuracy: sums are accumulated in float over blocks of 32 rows, then in double; the variance
// is two-pass (squared deviations from the mean). That is at least as accurate as XLA's
// two-pass float32 reductions, and far from a one-pass E[x^2] - mean^2 (oneDNN's own batch norm
// loses that much: 5e-2 relative gradient error against float64 on resnet18,
// tests/test_parity.py). A variant that read x once, two-pass within cache-resident blocks
// merged in double, measured slower here (10-12 ms against 8-10 on 16x56x56x256).
struct Rows {
  int64_t rows, channels;
};

template <class Dims>
Rows MakeRows(const Dims& dims) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) rows *= dims[i];
  return {rows, dims[dims.size() - 1]};
}

// Per-channel sums of the N values f(index, channel) (a std::array<float, N>) over all rows,
// in parallel over row blocks: float sums within a block (vectorised over channels), added up
// in double.
template <int N, class F>
std::array<std::vector<double>, N> ChannelSums(const Rows& shape, F f) {
  constexpr int64_t kBlock = 32;
  const int64_t c = shape.channels;
  const int64_t blocks = (shape.rows + kBlock - 1) / kBlock;
  std::array<std::vector<double>, N> total;
  for (auto& t : total) t.assign(c, 0.0);
#pragma omp parallel
  {
    std::array<std::vector<double>, N> partial;
    std::array<std::vector<float>, N> block_sum;
    for (int j = 0; j < N; ++j) partial[j].assign(c, 0.0), block_sum[j].resize(c);
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < blocks; ++b) {
      for (auto& acc : block_sum) std::fill(acc.begin(), acc.end(), 0.0f);
      const int64_t end = std::min(shape.rows, (b + 1) * kBlock);
      for (int64_t r = b * kBlock; r < end; ++r)
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const std::array<float, N> v = f(r * c + k, k);
          for (int j = 0; j < N; ++j) block_sum[j][k] += v[j];
        }
      for (int j = 0; j < N; ++j)
        for (int64_t k = 0; k < c; ++k) partial[j][k] += block_sum[j][k];
    }
#pragma omp critical
    for (int j = 0; j < N; ++j)
      for (int64_t k = 0; k < c; ++k) total[j][k] += partial[j][k];
  }
  return total;
}

// Per-channel mean and biased variance of `in`, two-pass: the mean, then the mean of squared
// deviations from it.
void ChannelMoments(const Rows& shape, const float* in, float* mean, float* var) {
  const int64_t c = shape.channels;
  const auto [sums] = ChannelSums<1>(shape, [&](int64_t i, int64_t) {
    return std::array<float, 1>{in[i]};
  });
  for (int64_t k = 0; k < c; ++k) mean[k] = static_cast<float>(sums[k] / shape.rows);
  const auto [squares] = ChannelSums<1>(shape, [&](int64_t i, int64_t k) {
    const float d = in[i] - mean[k];
    return std::array<float, 1>{d * d};
  });
  for (int64_t k = 0; k < c; ++k) var[k] = static_cast<float>(squares[k] / shape.rows);
}

// The residual operand is a buffer of x's size, or empty for none.
ffi::Error CheckResidual(const Rows& shape, size_t residual_elements) {
  if (residual_elements == 0 || residual_elements == size_t(shape.rows * shape.channels))
    return ffi::Error::Success();
  return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                    "batch norm: the residual must be empty or of the input's size");
}

template <bool kResidual>
void Normalize(const Rows& shape, const float* in, const float* residual, const float* mean,
               const float* multiplier, const float* shift, float floor, float* out) {
  const int64_t c = shape.channels;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < shape.rows; ++r)
    for (int64_t k = 0; k < c; ++k) {
      const int64_t i = r * c + k;
      float v = (in[i] - mean[k]) * multiplier[k] + shift[k];
      if (kResidual) v += residual[i];
      out[i] = std::max(v, floor);
    }
}

ffi::Error BatchNormForward(F32 x, F32 scale, F32 shift, F32 residual, F32Out y,
                            F32Out mean_out, F32Out var_out, float epsilon, bool relu) {
  const Rows shape = MakeRows(x.dimensions());
  if (ffi::Error error = CheckResidual(shape, residual.element_count()); error.failure())
    return error;
  const int64_t c = shape.channels;
  float* mean = mean_out->typed_data();
  float* var = var_out->typed_data();
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  ChannelMoments(shape, x.typed_data(), mean, var);
  std::vector<float> multiplier(c);  // y = (x - mean) * multiplier + shift
  for (int64_t k = 0; k < c; ++k)
    multiplier[k] = scale.typed_data()[k] / std::sqrt(var[k] + epsilon);
  const float floor = relu ? 0.0f : -std::numeric_limits<float>::infinity();
  (residual.element_count() ? Normalize<true> : Normalize<false>)(
      shape, x.typed_data(), residual.typed_data(), mean, multiplier.data(),
      shift.typed_data(), floor, y->typed_data());
  return ffi::Error::Success();
}

// `value` where `keep`, else 0, without a branch (a branch on the sign of activations is
// mispredicted half the time, and gcc does not if-convert it inside the sums).
inline float KeepIf(bool keep, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits &= -static_cast<uint32_t>(keep);
  std::memcpy(&value, &bits, sizeof bits);
  return value;
}

// dx = g * (dy' - mean(dy') - (x - mu) * slope), g = scale * rstd, slope = rstd^2 mean(dy' (x
// - mu)), where dy' is the gradient at the normalisation's output: dy, zeroed where the ReLU's
// output y is 0 (y > 0 exactly where its input was). dy' is also the residual's gradient.
template <bool kRelu, bool kResidual>
void BatchNormGradient(const Rows& shape, const float* x, const float* y, const float* dy,
                       const float* mu, const float* var, const float* scale, float epsilon,
                       float* dx, float* dscale, float* dshift, float* dresidual) {
  const int64_t c = shape.channels;
  auto masked = [&](int64_t i) { return kRelu ? KeepIf(y[i] > 0.0f, dy[i]) : dy[i]; };
  const auto [sum_g, sum_g_centred] = ChannelSums<2>(shape, [&](int64_t i, int64_t k) {
    const float g = masked(i);
    if (kResidual) dresidual[i] = g;
    return std::array<float, 2>{g, g * (x[i] - mu[k])};
  });
  std::vector<float> g(c), mean_g(c), slope(c);
  for (int64_t k = 0; k < c; ++k) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(var[k] + epsilon));
    dshift[k] = static_cast<float>(sum_g[k]);
    dscale[k] = static_cast<float>(sum_g_centred[k] * rstd);
    g[k] = static_cast<float>(scale[k] * rstd);
    mean_g[k] = static_cast<float>(sum_g[k] / shape.rows);
    slope[k] = static_cast<float>(sum_g_centred[k] / shape.rows * rstd * rstd);
  }
  // With a residual, dy' is stored: read it back rather than x, y and dy again.
  const float* stored = kResidual ? dresidual : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < shape.rows; ++r)
    for (int64_t k = 0; k < c; ++k) {
      const int64_t i = r * c + k;
      const float grad = kResidual ? stored[i] : masked(i);
      dx[i] = g[k] * (grad - mean_g[k] - (x[i] - mu[k]) * slope[k]);
    }
}

ffi::Error BatchNormBackward(F32 x, F32 y, F32 dy, F32 mean, F32 var, F32 scale, F32Out dx,
                             F32Out dscale, F32Out dshift, F32Out dresidual, float epsilon,
                             bool relu) {
  const Rows shape = MakeRows(x.dimensions());
  if (ffi::Error error = CheckResidual(shape, dresidual->element_count()); error.failure())
    return error;
  const bool residual = dresidual->element_count() != 0;
  auto* gradient = relu ? (residual ? BatchNormGradient<true, true>
                                    : BatchNormGradient<true, false>)
                        : (residual ? BatchNormGradient<false, true>
                                    : BatchNormGradient<false, false>);
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  gradient(shape, x.typed_data(), y.typed_data(), dy.typed_data(), mean.typed_data(),
           var.typed_data(), scale.typed_data(), epsilon, dx->typed_data(),
           dscale->typed_data(), dshift->typed_data(), dresidual->typed_data());
  return ffi::Error::Success();
}

// The gradient of a max pool over NHWC data (resnet_jax/pooling.py): each output pixel's
// gradient goes to the input pixel of its window that held the first maximum, `first` being
// that pixel's row-major offset in the window. XLA:CPU runs the same thing as nine padded
// copies summed (~160 ms on resnet50's stem at batch 16), or as select-and-scatter, slower.
// Windows overlap, so images are shared out between threads, never rows of one image.
ffi::Error MaxPoolBackward(ffi::Buffer<ffi::S8> first, F32 dy, F32Out dx, int64_t kw,
                           int64_t sh, int64_t sw, int64_t top, int64_t left) {
  const auto out = dy.dimensions();
  const auto in = dx->dimensions();
  const int64_t n = out[0], oh = out[1], ow = out[2], c = out[3], h = in[1], w = in[2];
  const int8_t* offsets = first.typed_data();
  const float* grad = dy.typed_data();
  float* result = dx->typed_data();
  std::lock_guard<std::mutex> lock(ExecutionMutex());
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    float* image = result + b * h * w * c;
    std::fill(image, image + h * w * c, 0.0f);
    for (int64_t r = 0; r < oh; ++r)
      for (int64_t q = 0; q < ow; ++q) {
        const int64_t at = ((b * oh + r) * ow + q) * c;
        for (int64_t k = 0; k < c; ++k) {
          const int64_t row = r * sh - top + offsets[at + k] / kw;
          const int64_t col = q * sw - left + offsets[at + k] % kw;
          // A maximum in the padding (-inf) only where the window held nothing larger.
          if (row >= 0 && row < h && col >= 0 && col < w)
            image[(row * w + col) * c + k] += grad[at + k];
        }
      }
  }
  return ffi::Error::Success();
}

// Inference (evaluation, prediction, embedding, serving): batch norm folded into the weights
// and a bias beforehand (resnet_jax/cpu/fused.py), and the rest of the block's tail fused into
// the convolution as oneDNN post-ops: y = relu(conv(x, w) + bias + residual), one pass over
// the output instead of a convolution and two element-wise passes (the profile put those at
// a fifth of a ResNet-50 forward pass on the CPU). The weights arrive already in the layout
// the primitive reads (PrepareWeights, once when the model is loaded): reordering XLA's HWIO
// buffer at every call cost a fresh 100 MB allocation and a pass over it per ResNet-50 forward
// pass, most of the time of a batch of one.
memory::desc Bias(int64_t o) {
  return memory::desc({o}, memory::data_type::f32, memory::format_tag::a);
}

// Activations between the inference convolutions are kept in oneDNN's blocked layout nChw8c
// (nChw16c on AVX-512), logically NCHW, physically (n, c / block, h, w, block): its direct
// kernels run ResNet-50's layers in 49 ms against 65 for its NHWC ones at batch 1 on the
// 2-core development machine (3x3: 24 against 29 ms, 1x1: 25 against 37). `block` 0: XLA's
// NHWC (channel counts the block does not divide, and the images).
memory::desc Activations(int64_t n, int64_t c, int64_t h, int64_t w, int64_t block) {
  if (block == 0)
    return memory::desc({n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc);
  return memory::desc({n, c, h, w}, memory::data_type::f32,
                      block == 16 ? memory::format_tag::nChw16c : memory::format_tag::nChw8c);
}

struct Layouts {
  int64_t src_block, dst_block;
  memory::desc Src(const Geometry& g) const { return Activations(g.n, g.c, g.h, g.w, src_block); }
  memory::desc Dst(const Geometry& g) const {
    return Activations(g.n, g.o, g.oh, g.ow, dst_block);
  }
};

dnnl::convolution_forward::primitive_desc InferenceForward(const Geometry& g, Layouts layouts,
                                                           bool residual, bool relu) {
  dnnl::post_ops ops;
  if (residual) ops.append_sum(1.f);  // adds the output buffer's contents: the residual
  if (relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr = UserScratchpad();
  attr.set_post_ops(ops);
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      // NHWC images into blocked outputs (the stem): the source layout the kernel wants
      // (NCHW), reordered at each call (three channels: cheap).
      layouts.src_block == 0 && layouts.dst_block != 0
          ? memory::desc({g.n, g.c, g.h, g.w}, memory::data_type::f32, memory::format_tag::any)
          : layouts.Src(g),
      g.WeightsAny(), Bias(g.o), layouts.Dst(g), g.Strides(), g.PadLow(), g.PadHigh(), attr);
}

// The format tag that describes `desc` exactly, or -1 (a layout no tag names: HWIO is kept).
int32_t TagOf(const memory::desc& desc) {
  const memory::dims dims = desc.get_dims();
  for (int tag = dnnl_format_tag_any + 1; tag < dnnl_format_tag_last; ++tag) {
    dnnl_memory_desc_t candidate;
    if (dnnl_memory_desc_create_with_tag(&candidate, static_cast<int>(dims.size()), dims.data(),
                                         dnnl_f32, static_cast<dnnl_format_tag_t>(tag)) !=
        dnnl_success)
      continue;
    const bool same = dnnl_memory_desc_equal(candidate, desc.get());
    dnnl_memory_desc_destroy(candidate);
    if (same) return tag;
  }
  return -1;
}

// The layout prepared weights are in: a format tag, or XLA's HWIO (-1).
memory::desc PreparedWeights(const Geometry& g, int32_t tag) {
  if (tag < 0) return g.WeightsHWIO();
  return memory::desc(g.WeightDims(), memory::data_type::f32,
                      static_cast<memory::format_tag>(tag));
}

struct InferenceEntry {
  dnnl::primitive conv;
  memory::desc given;    // the prepared weights' layout
  bool reorder = false;  // whether the primitive wants another (a geometry unlike the one
                         // the weights were prepared for): then reordered at every call
  dnnl::reorder to_primitive;
  memory reordered, scratchpad;
  bool reorder_src = false;  // the images of the stem, into the layout its kernel reads
  dnnl::reorder src_to_primitive;
  memory src;
};

// (n, c, h, w) of an activation buffer: NHWC, or blocked (n, c / block, h, w, block).
template <class Dims>
std::array<int64_t, 4> Logical(const Dims& d, int64_t block) {
  if (block == 0) return {d[0], d[3], d[1], d[2]};
  return {d[0], d[1] * d[4], d[2], d[3]};
}

ffi::Error Inference(F32 x, F32 weights, F32 bias, F32 residual,
                     ffi::Buffer<ffi::S32> layout, F32Out y, int64_t kh, int64_t kw,
                     int64_t groups, int64_t sh, int64_t sw, int64_t ph0, int64_t ph1,
                     int64_t pw0, int64_t pw1, int64_t src_block, int64_t dst_block,
                     bool relu) {
  const Layouts layouts{src_block, dst_block};
  if (x.dimensions().size() != (src_block ? 5u : 4u) ||
      y->dimensions().size() != (dst_block ? 5u : 4u))
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "inference convolution: activations of the wrong rank for their layout");
  const auto [n, c, h, w] = Logical(x.dimensions(), src_block);
  const auto [yn, o, oh, ow] = Logical(y->dimensions(), dst_block);
  const Geometry g{n, h, w, c, kh, kw, o, oh, ow, groups, sh, sw, ph0, ph1, pw0, pw1};
  const int32_t tag = layout.typed_data()[0];
  const bool has_residual = residual.element_count() != 0;
  if (has_residual && residual.element_count() != y->element_count())
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "inference convolution: the residual must be empty or of the output's "
                      "size");
  const memory::desc given = PreparedWeights(g, tag);
  if (weights.element_count() * sizeof(float) != given.get_size() ||
      bias.element_count() != size_t(g.o))
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "inference convolution: weights or bias of the wrong size for the "
                      "layout they were prepared in");
  std::ostringstream key;
  key << g.Key('i') << tag << ',' << src_block << ',' << dst_block << ',' << has_residual
      << ',' << relu;
  InferenceEntry& e = Lookup<InferenceEntry>(key.str(), [&](InferenceEntry& e) {
    auto pd = InferenceForward(g, layouts, has_residual, relu);
    e.conv = dnnl::convolution_forward(pd);
    e.given = given;
    e.reorder = pd.weights_desc() != given;
    if (e.reorder) {
      e.to_primitive = dnnl::reorder(
          dnnl::reorder::primitive_desc(Engine(), given, Engine(), pd.weights_desc()));
      e.reordered = memory(pd.weights_desc(), Engine());
    }
    e.scratchpad = memory(pd.scratchpad_desc(), Engine());
    e.reorder_src = pd.src_desc() != layouts.Src(g);
    if (e.reorder_src) {
      e.src_to_primitive = dnnl::reorder(
          dnnl::reorder::primitive_desc(Engine(), layouts.Src(g), Engine(), pd.src_desc()));
      e.src = memory(pd.src_desc(), Engine());
    }
  });
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  // The residual is the output buffer itself (aliased by the caller): the sum post-op adds
  // what the output holds. Copied there if XLA ever hands over two buffers.
  if (has_residual && residual.typed_data() != y->typed_data())
    std::memcpy(y->typed_data(), residual.typed_data(), y->element_count() * sizeof(float));
  dnnl::stream stream(Engine());
  memory prepared(e.given, Engine(), weights.typed_data());
  if (e.reorder) e.to_primitive.execute(stream, prepared, e.reordered);
  memory src(layouts.Src(g), Engine(), x.typed_data());
  if (e.reorder_src) e.src_to_primitive.execute(stream, src, e.src);
  e.conv.execute(stream, {{DNNL_ARG_SRC, e.reorder_src ? e.src : src},
                          {DNNL_ARG_WEIGHTS, e.reorder ? e.reordered : prepared},
                          {DNNL_ARG_BIAS, memory(Bias(g.o), Engine(), bias.typed_data())},
                          {DNNL_ARG_DST, memory(layouts.Dst(g), Engine(), y->typed_data())},
                          {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
  stream.wait();
  return ffi::Error::Success();
}

ffi::Error GuardedInference(F32 x, F32 weights, F32 bias, F32 residual,
                            ffi::Buffer<ffi::S32> layout, F32Out y, int64_t kh, int64_t kw,
                            int64_t groups, int64_t sh, int64_t sw, int64_t ph0, int64_t ph1,
                            int64_t pw0, int64_t pw1, int64_t src_block, int64_t dst_block,
                            bool relu) {
  try {
    return Inference(x, weights, bias, residual, layout, y, kh, kw, groups, sh, sw, ph0, ph1,
                     pw0, pw1, src_block, dst_block, relu);
  } catch (const dnnl::error& error) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN inference convolution failed: ") + error.what());
  }
}

// oneDNN reports failures as exceptions; XLA wants an error value.
template <ffi::Error (*Impl)(F32, F32, F32Out, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t)>
ffi::Error Guarded(F32 a, F32 b, F32Out out, int64_t groups, int64_t sh, int64_t sw,
                   int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  try {
    return Impl(a, b, out, groups, sh, sw, ph0, ph1, pw0, pw1);
  } catch (const dnnl::error& error) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN convolution failed: ") + error.what());
  }
}


// The attributes of a convolution's geometry that its buffers do not give.
template <class Binding>
auto GeometryAttributes(Binding binding) {
  return std::move(binding)
      .template Attr<int64_t>("groups")
      .template Attr<int64_t>("sh")
      .template Attr<int64_t>("sw")
      .template Attr<int64_t>("ph0")
      .template Attr<int64_t>("ph1")
      .template Attr<int64_t>("pw0")
      .template Attr<int64_t>("pw1");
}

auto Signature() {
  return GeometryAttributes(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvForward, Guarded<Forward>, Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvInputGradient, Guarded<InputGradient>,
                              Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvWeightGradient, Guarded<WeightGradient>,
                              Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvInference, GuardedInference,
                              GeometryAttributes(ffi::Ffi::Bind()
                                                     .Arg<F32>()
                                                     .Arg<F32>()
                                                     .Arg<F32>()
                                                     .Arg<F32>()
                                                     .Arg<ffi::Buffer<ffi::S32>>()
                                                     .Ret<F32>()
                                                     .Attr<int64_t>("kh")
                                                     .Attr<int64_t>("kw"))
                                  .Attr<int64_t>("src_block")
                                  .Attr<int64_t>("dst_block")
                                  .Attr<bool>("relu"));

// Called through ctypes when a model is loaded for inference: HWIO weights `hwio` of the
// convolution `geometry` (Geometry's 16 numbers, then the source's and the output's channel
// blocks, Layouts) reordered into the layout its inference
// primitive reads, written to `out` (nullptr: only the size is wanted), that layout's format
// tag to `tag` (-1: HWIO kept). Returns the number of floats, or -1 where oneDNN failed.
extern "C" int64_t ResnetJaxPrepareWeights(const int64_t* geometry, const float* hwio,
                                           float* out, int32_t* tag) {
  try {
    static_assert(sizeof(Geometry) == 16 * sizeof(int64_t), "Geometry is 16 int64s");
    Geometry g;
    std::memcpy(&g, geometry, sizeof g);
    const Layouts layouts{geometry[16], geometry[17]};
    const memory::desc wanted = InferenceForward(g, layouts, false, true).weights_desc();
    *tag = TagOf(wanted);
    const memory::desc target = PreparedWeights(g, *tag);
    if (out != nullptr) {
      dnnl::stream stream(Engine());
      memory source(g.WeightsHWIO(), Engine(), const_cast<float*>(hwio));
      memory prepared(target, Engine(), out);
      dnnl::reorder(source, prepared).execute(stream, source, prepared);
      stream.wait();
    }
    return static_cast<int64_t>(target.get_size() / sizeof(float));
  } catch (const dnnl::error&) {
    return -1;
  }
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxBatchNormForward, BatchNormForward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxBatchNormBackward, BatchNormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxMaxPoolBackward, MaxPoolBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("top")
                                  .Attr<int64_t>("left"));
