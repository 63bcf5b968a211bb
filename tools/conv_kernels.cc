// Every oneDNN kernel that can run each of ResNet-50's convolution geometries for inference,
// timed alone: what layout and kernel choice could gain before any of it is built into the
// inference graph. Built and run by tools/conv_kernels.py (against the oneDNN the CPU
// extension links); arguments: batch size, repeats, and how many of the geometries to time.
//
// Each geometry is one forward_inference primitive (bias, ReLU post-op, as the fused graph
// runs them) for activations in nChw8c and in NHWC, for each implementation oneDNN offers
// (primitive_desc::next_impl), reference and SSE4.1 kernels left out. The candidates are timed
// interleaved, `repeats` times each, on the same buffers; the median is printed in ms, then
// the whole network's convolutions (each geometry times its count) for the first kernel
// oneDNN picks in each layout and for the fastest one.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

using dnnl::memory;
using Tag = memory::format_tag;

namespace {

struct Geometry {
  int in, out, size, kernel, stride, count;  // channels in and out, input H = W, k, s, uses
};

// ResNet-50 (torchvision, stride in the 3x3): the stem, then each distinct bottleneck conv.
const std::vector<Geometry> kResNet50 = {
    {3, 64, 224, 7, 2, 1},      {64, 64, 56, 1, 1, 1},     {64, 64, 56, 3, 1, 3},
    {64, 256, 56, 1, 1, 4},     {256, 64, 56, 1, 1, 2},    {256, 128, 56, 1, 1, 1},
    {128, 128, 56, 3, 2, 1},    {128, 512, 28, 1, 1, 4},   {512, 128, 28, 1, 1, 3},
    {128, 128, 28, 3, 1, 3},    {256, 512, 56, 1, 2, 1},   {512, 256, 28, 1, 1, 1},
    {256, 256, 28, 3, 2, 1},    {256, 256, 14, 3, 1, 5},   {256, 1024, 14, 1, 1, 6},
    {1024, 256, 14, 1, 1, 5},   {512, 1024, 28, 1, 2, 1},  {1024, 512, 14, 1, 1, 1},
    {512, 512, 14, 3, 2, 1},    {512, 512, 7, 3, 1, 2},    {512, 2048, 7, 1, 1, 3},
    {2048, 512, 7, 1, 1, 2},    {1024, 2048, 14, 1, 2, 1},
};

struct Candidate {
  std::string layout, kernel;
  dnnl::convolution_forward conv;
  memory src, weights, bias, dst, scratchpad;
  std::vector<double> ms;
  double Median() {
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

memory Filled(const memory::desc& desc, const dnnl::engine& engine, float value) {
  memory m(desc, engine);
  float* data = static_cast<float*>(m.get_data_handle());
  std::fill(data, data + desc.get_size() / sizeof(float), value);
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s BATCH REPEATS GEOMETRIES\n", argv[0]);
    return 2;
  }
  const int n = std::atoi(argv[1]), repeats = std::atoi(argv[2]);
  const size_t layers = std::min<size_t>(std::atoi(argv[3]), kResNet50.size());
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  dnnl::post_ops relu;
  relu.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  attr.set_post_ops(relu);
  std::map<std::string, double> totals;
  for (size_t i = 0; i < layers; ++i) {
    const Geometry& g = kResNet50[i];
    const int pad = g.kernel / 2, out_size = (g.size + 2 * pad - g.kernel) / g.stride + 1;
    std::vector<Candidate> candidates;
    for (auto [layout, tag] : {std::pair{"nChw8c", Tag::nChw8c}, std::pair{"nhwc", Tag::nhwc}}) {
      // The stem's three input channels are no block of 8: into nChw8c outputs it reads the
      // layout of its kernel's choice, as the inference graph's does (that reorder untimed).
      memory::desc src({n, g.in, g.size, g.size}, memory::data_type::f32,
                       g.in % 8 == 0 ? tag : tag == Tag::nhwc ? Tag::nhwc : Tag::any);
      memory::desc weights({g.out, g.in, g.kernel, g.kernel}, memory::data_type::f32, Tag::any);
      memory::desc bias({g.out}, memory::data_type::f32, Tag::a);
      memory::desc dst({n, g.out, out_size, out_size}, memory::data_type::f32, tag);
      dnnl::convolution_forward::primitive_desc pd(
          engine, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
          weights, bias, dst, {g.stride, g.stride}, {pad, pad}, {pad, pad}, attr, true);
      if (!pd) continue;
      do {
        const std::string kernel = pd.impl_info_str();
        if (kernel.rfind("ref", 0) == 0 || kernel.find("sse41") != std::string::npos) continue;
        candidates.push_back({layout, kernel, dnnl::convolution_forward(pd),
                              Filled(pd.src_desc(), engine, 0.5f),
                              Filled(pd.weights_desc(), engine, 0.01f),
                              Filled(pd.bias_desc(), engine, 0.f), memory(pd.dst_desc(), engine),
                              memory(pd.scratchpad_desc(), engine), {}});
      } while (pd.next_impl());
    }
    for (int r = 0; r < repeats; ++r) {
      for (Candidate& c : candidates) {
        const auto start = std::chrono::steady_clock::now();
        c.conv.execute(stream, {{DNNL_ARG_SRC, c.src}, {DNNL_ARG_WEIGHTS, c.weights},
                                {DNNL_ARG_BIAS, c.bias}, {DNNL_ARG_DST, c.dst},
                                {DNNL_ARG_SCRATCHPAD, c.scratchpad}});
        stream.wait();
        c.ms.push_back(std::chrono::duration<double, std::milli>(
                           std::chrono::steady_clock::now() - start).count());
      }
    }
    std::printf("%dx%d %d->%d stride %d at %d px (x%d):", g.kernel, g.kernel, g.in, g.out,
                g.stride, g.size, g.count);
    std::map<std::string, double> first, best;
    for (Candidate& c : candidates) {
      const double ms = c.Median();
      std::printf("  %s %s %.3f", c.layout.c_str(), c.kernel.c_str(), ms);
      if (!first.count(c.layout)) first[c.layout] = ms;
      best[c.layout] = best.count(c.layout) ? std::min(best[c.layout], ms) : ms;
    }
    std::printf("\n");
    for (auto& [layout, ms] : first) totals[layout + ", oneDNN's first choice"] += ms * g.count;
    for (auto& [layout, ms] : best) totals[layout + ", fastest kernel"] += ms * g.count;
  }
  for (auto& [what, ms] : totals) std::printf("total %s: %.1f ms\n", what.c_str(), ms);
  return 0;
}
