// Decode tokens to a WAV with the TorchScript step modules written by
//   uniaudio-rt export torchscript-decoder --decoder DEC --out DIR
// streaming them in chunks with explicit state (decoder_stream.h). Links only against the libtorch that
// the torch wheel ships.
//
//   detokenize_torchscript DIR tokens.json out.wav [--chunk 25] [--seed 0] [--rng splitmix|torch] ...
//
// --rng torch draws from torch's CPU generator seeded with --seed, in Detokenizer.stream's order: the audio
// equals Python's Detokenizer.stream(chunks, generator=torch.Generator().manual_seed(seed)).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include "decoder_stream.h"

namespace {

using uniaudio::Array;
using uniaudio::Tensor;

template <class T>
at::Tensor to_torch(const Array<T>& a) {
  auto dtype = c10::CppTypeToScalarType<T>::value;
  if (a.data.empty()) return at::empty(a.shape, at::TensorOptions().dtype(dtype));
  // the modules do not write to their inputs, and the outputs are copied out before the inputs go
  return torch::from_blob(const_cast<T*>(a.data.data()), a.shape, dtype);
}

template <class T>
Array<T> from_torch(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  Array<T> a;
  a.shape.assign(c.sizes().begin(), c.sizes().end());
  a.data.assign(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
  return a;
}

Tensor from_torch_any(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return from_torch<float>(t);
    case at::kDouble: return from_torch<double>(t);
    case at::kLong: return from_torch<int64_t>(t);
    default: throw std::runtime_error("unexpected output dtype " + std::string(c10::toString(t.scalar_type())));
  }
}

class TorchScriptGraphs : public uniaudio::Graphs {
 public:
  explicit TorchScriptGraphs(const uniaudio::DecoderSpec& spec) {
    for (const auto& [name, g] : spec.graphs) modules_.emplace(name, torch::jit::load(g.path));
  }

  std::vector<Tensor> run(const std::string& name, std::vector<Tensor> inputs) override {
    torch::NoGradGuard no_grad;
    std::vector<torch::jit::IValue> args;
    for (const Tensor& t : inputs) args.emplace_back(std::visit([](const auto& a) { return to_torch(a); }, t));
    const torch::jit::IValue out = modules_.at(name).forward(args);
    std::vector<Tensor> outputs;
    if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) outputs.push_back(from_torch_any(v.toTensor()));
    } else {
      outputs.push_back(from_torch_any(out.toTensor()));
    }
    return outputs;
  }

 private:
  std::map<std::string, torch::jit::Module> modules_;
};

// torch.rand(shape, generator=g, dtype=torch.float64) and torch.randn(shape, generator=g) of onnx_export.TorchRandom.
class TorchRandom : public uniaudio::Random {
 public:
  explicit TorchRandom(uint64_t seed) : gen_(at::detail::createCPUGenerator(seed)) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(seed);  // what torch.Generator().manual_seed(seed) does
  }
  Array<double> uniform(const std::vector<int64_t>& shape) override {
    return from_torch<double>(at::rand(shape, gen_, at::TensorOptions().dtype(at::kDouble)));
  }
  Array<float> normal(const std::vector<int64_t>& shape) override {
    return from_torch<float>(at::randn(shape, gen_, at::TensorOptions().dtype(at::kFloat)));
  }

 private:
  at::Generator gen_;
};

}  // namespace

int main(int argc, char** argv) {
  return uniaudio::decoder_host_main(
      argc, argv, "uniaudio-rt-torchscript-decoder/1",
      [](const uniaudio::DecoderSpec& spec, const uniaudio::HostOptions& o) {
        if (o.threads > 0) at::set_num_threads(static_cast<int>(o.threads));
        return std::make_unique<TorchScriptGraphs>(spec);
      },
      [](const uniaudio::HostOptions& o) -> std::unique_ptr<uniaudio::Random> {
        if (o.rng == "torch") return std::make_unique<TorchRandom>(static_cast<uint64_t>(o.seed));
        return nullptr;
      });
}
