// XLA FFI handlers for XLA:CPU (resnet_jax/onednn.py builds and registers them):
// - NHWC/HWIO float32 convolutions computed by oneDNN: forward pass, input gradient and weight
//   gradient. XLA:CPU's own convolutions (Eigen) run about half as fast on ResNet layers, and
//   its weight-gradient lowering an order of magnitude slower (BENCHMARKS.md).
// - Training-mode batch norm, optionally followed by a ReLU, forward and backward, in plain
//   OpenMP loops (see BatchNormForward).
//
// Activations stay in XLA's NHWC buffers; weights are read and written in XLA's HWIO layout
// (grouped: the output channels of group g are g*O/G .. (g+1)*O/G - 1) and reordered to and
// from the blocked layout the primitive prefers. Primitives are built once per geometry and
// cached with their scratchpad; calls run one at a time (ExecutionMutex).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

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

Entry& Lookup(const std::string& key, const std::function<void(Entry&)>& build) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Entry>& slot = cache[key];
  if (!slot) {
    auto entry = std::make_unique<Entry>();
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
  Entry& e = Lookup(g.Key('f'), [&](Entry& e) {
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
  Entry& e = Lookup(g.Key('d'), [&](Entry& e) {
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

ffi::Error WeightGradient(F32 x, F32 dy, F32Out dw, int64_t groups, int64_t sh, int64_t sw,
                          int64_t ph0, int64_t ph1, int64_t pw0, int64_t pw1) {
  const Geometry g = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), groups,
                                  sh, sw, ph0, ph1, pw0, pw1);
  Entry& e = Lookup(g.Key('w'), [&](Entry& e) {
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

// Training-mode batch normalisation of float32 NHWC data, viewed as (rows, channels):
// per-channel statistics over the rows. XLA:CPU emits the forward and backward passes as ~16
// separate loops (~21 passes over the activations); these take 3 forward (mean, variance,
// normalise) and 3 or 4 backward (the ReLU mask, two sums, the gradient). Sums are accumulated
// in float over blocks of 32 rows, then in double, so the result is at least as accurate as
// XLA's two-pass float32 reductions (oneDNN's own batch norm is not: 5e-2 relative gradient
// error against float64 on resnet18, tests/test_parity.py).
struct Rows {
  int64_t rows, channels;
};

template <class Dims>
Rows MakeRows(const Dims& dims) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) rows *= dims[i];
  return {rows, dims[dims.size() - 1]};
}

// Per-channel sums of f(index, channel) over all rows, in parallel over row blocks: float
// sums over blocks of 32 rows (vectorised over channels), added up in double.
template <class F>
std::vector<double> ChannelSums(const Rows& shape, F f) {
  constexpr int64_t kBlock = 32;
  const int64_t c = shape.channels;
  const int64_t blocks = (shape.rows + kBlock - 1) / kBlock;
  std::vector<double> total(c, 0.0);
#pragma omp parallel
  {
    std::vector<double> partial(c, 0.0);
    std::vector<float> block_sum(c);
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < blocks; ++b) {
      float* acc = block_sum.data();
      for (int64_t k = 0; k < c; ++k) acc[k] = 0.0f;
      const int64_t end = std::min(shape.rows, (b + 1) * kBlock);
      for (int64_t r = b * kBlock; r < end; ++r)
        for (int64_t k = 0; k < c; ++k) acc[k] += f(r * c + k, k);
      for (int64_t k = 0; k < c; ++k) partial[k] += acc[k];
    }
#pragma omp critical
    for (int64_t k = 0; k < c; ++k) total[k] += partial[k];
  }
  return total;
}

// y = (x - mean) * multiplier + shift, then max(y, 0) with `relu`. The backward pass
// recomputes y for the ReLU's mask with the same expression (built with -ffp-contract=off, so
// both evaluate it identically).
inline float Normalized(float x, float mean, float multiplier, float shift) {
  return (x - mean) * multiplier + shift;
}

ffi::Error BatchNormForward(F32 x, F32 scale, F32 shift, F32Out y, F32Out mean_out,
                            F32Out var_out, float epsilon, bool relu) {
  const Rows shape = MakeRows(x.dimensions());
  const int64_t c = shape.channels;
  const float* in = x.typed_data();
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  std::vector<double> sums = ChannelSums(shape, [&](int64_t i, int64_t) { return in[i]; });
  std::vector<float> mean(c), multiplier(c);  // y = (x - mean) * multiplier + shift
  for (int64_t k = 0; k < c; ++k) mean[k] = static_cast<float>(sums[k] / shape.rows);
  std::vector<double> squares = ChannelSums(shape, [&](int64_t i, int64_t k) {
    const float d = in[i] - mean[k];
    return d * d;
  });
  float* mean_data = mean_out->typed_data();
  float* var_data = var_out->typed_data();
  for (int64_t k = 0; k < c; ++k) {
    const float var = static_cast<float>(squares[k] / shape.rows);
    mean_data[k] = mean[k];
    var_data[k] = var;
    multiplier[k] = scale.typed_data()[k] / std::sqrt(var + epsilon);
  }
  const float* sh = shift.typed_data();
  float* out = y->typed_data();
  const float floor = relu ? 0.0f : -std::numeric_limits<float>::infinity();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < shape.rows; ++r)
    for (int64_t k = 0; k < c; ++k)
      out[r * c + k] =
          std::max(Normalized(in[r * c + k], mean[k], multiplier[k], sh[k]), floor);
  return ffi::Error::Success();
}

ffi::Error BatchNormBackward(F32 x, F32 dy, F32 mean, F32 var, F32 scale, F32 shift,
                             F32Out dx, F32Out dscale, F32Out dshift, float epsilon, bool relu) {
  const Rows shape = MakeRows(x.dimensions());
  const int64_t c = shape.channels;
  const float* in = x.typed_data();
  const float* mu = mean.typed_data();
  std::lock_guard<std::mutex> lock(ExecutionMutex());
  std::vector<float> rstd(c), multiplier(c);
  for (int64_t k = 0; k < c; ++k) {
    // The forward pass's multiplier, computed the same way (the ReLU mask depends on it).
    multiplier[k] = scale.typed_data()[k] / std::sqrt(var.typed_data()[k] + epsilon);
    rstd[k] = 1.0f / std::sqrt(var.typed_data()[k] + epsilon);
  }
  // The gradient at the batch norm's output: dy, or dy where the ReLU passed y > 0.
  std::vector<float> masked;
  const float* grad = dy.typed_data();
  if (relu) {
    masked.resize(shape.rows * c);
    const float* sh = shift.typed_data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < shape.rows; ++r)
      for (int64_t k = 0; k < c; ++k) {
        const int64_t i = r * c + k;
        masked[i] = Normalized(in[i], mu[k], multiplier[k], sh[k]) > 0.0f ? grad[i] : 0.0f;
      }
    grad = masked.data();
  }
  std::vector<double> sum_dy = ChannelSums(shape, [&](int64_t i, int64_t) { return grad[i]; });
  std::vector<double> sum_dy_xhat = ChannelSums(shape, [&](int64_t i, int64_t k) {
    return grad[i] * ((in[i] - mu[k]) * rstd[k]);
  });
  // dx = g * (dy - mean(dy) - xhat * mean(dy * xhat)), g = scale * rstd, xhat = (x - mu) * rstd
  std::vector<float> g(c), mean_dy(c), slope(c);
  for (int64_t k = 0; k < c; ++k) {
    dshift->typed_data()[k] = static_cast<float>(sum_dy[k]);
    dscale->typed_data()[k] = static_cast<float>(sum_dy_xhat[k]);
    g[k] = scale.typed_data()[k] * rstd[k];
    mean_dy[k] = static_cast<float>(sum_dy[k] / shape.rows);
    slope[k] = static_cast<float>(sum_dy_xhat[k] / shape.rows) * rstd[k];
  }
  float* out = dx->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < shape.rows; ++r)
    for (int64_t k = 0; k < c; ++k) {
      const int64_t i = r * c + k;
      out[i] = g[k] * (grad[i] - mean_dy[k] - (in[i] - mu[k]) * slope[k]);
    }
  return ffi::Error::Success();
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


auto Signature() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<int64_t>("groups")
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("ph0")
      .Attr<int64_t>("ph1")
      .Attr<int64_t>("pw0")
      .Attr<int64_t>("pw1");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvForward, Guarded<Forward>, Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvInputGradient, Guarded<InputGradient>,
                              Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxOnednnConvWeightGradient, Guarded<WeightGradient>,
                              Signature());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResnetJaxBatchNormForward, BatchNormForward,
                              ffi::Ffi::Bind()
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
                                  .Attr<float>("epsilon")
                                  .Attr<bool>("relu"));
