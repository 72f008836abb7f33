// Decode tokens to a WAV with the six ONNX graphs written by
//   uniaudio-rt export onnx-decoder --decoder DEC --out DIR
// using the ONNX Runtime C++ API, streaming them in chunks with explicit state (decoder_stream.h, the same
// loop as detokenize_torchscript.cpp and as OrtDetokenizer in Python).
//
//   detokenize_onnxruntime DIR tokens.json out.wav [--chunk 25] [--seed 0] [--threads N] ...
//
// Randomness: SplitMixRandom (--rng splitmix, the only stream here), so the audio equals
// OrtDetokenizer(DIR).stream(chunks, rng=SplitMixRandom(seed)) and detokenize_torchscript with the same seed
// on the TorchScript export of the same decoder (up to the runtimes' float differences).
//
// Needs ONNX Runtime's C/C++ headers and library (not shipped by any package registry; use an official
// ONNX Runtime release archive): cmake -DONNXRUNTIME_ROOT=/path/to/onnxruntime ...
#include <onnxruntime_cxx_api.h>

#include "decoder_stream.h"

namespace {

using uniaudio::Array;
using uniaudio::Tensor;

template <class T>
Ort::Value to_ort(Ort::MemoryInfo& mem, const Array<T>& a) {
  static T none{};  // a zero-size tensor still needs a non-null buffer; ORT reads no element of it
  T* data = a.data.empty() ? &none : const_cast<T*>(a.data.data());  // inputs are not written to
  return Ort::Value::CreateTensor<T>(mem, data, a.data.size(), a.shape.data(), a.shape.size());
}

template <class T>
Array<T> from_ort(Ort::Value& v) {
  Array<T> a;
  a.shape = v.GetTensorTypeAndShapeInfo().GetShape();
  const T* p = v.GetTensorMutableData<T>();
  a.data.assign(p, p + Array<T>::count(a.shape));
  return a;
}

class OrtGraphs : public uniaudio::Graphs {
 public:
  OrtGraphs(const uniaudio::DecoderSpec& spec, int threads)
      : env_(ORT_LOGGING_LEVEL_WARNING, "uniaudio-rt"), mem_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
    Ort::SessionOptions opts;
    if (threads > 0) {
      opts.SetIntraOpNumThreads(threads);
      opts.SetInterOpNumThreads(threads);
    }
    for (const auto& [name, g] : spec.graphs) {
      sessions_[name] = std::make_unique<Ort::Session>(env_, g.path.c_str(), opts);
      names_[name] = g;
    }
  }

  std::vector<Tensor> run(const std::string& name, std::vector<Tensor> inputs) override {
    const uniaudio::GraphFile& g = names_.at(name);
    std::vector<Ort::Value> values;
    std::vector<const char*> in_names, out_names;
    for (const Tensor& t : inputs) values.push_back(std::visit([this](const auto& a) { return to_ort(mem_, a); }, t));
    for (const std::string& n : g.inputs) in_names.push_back(n.c_str());
    for (const std::string& n : g.outputs) out_names.push_back(n.c_str());
    if (values.size() != in_names.size()) throw std::runtime_error(name + ": wrong number of inputs");
    auto outs = sessions_.at(name)->Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(),
                                        out_names.data(), out_names.size());
    std::vector<Tensor> outputs;
    for (Ort::Value& v : outs) {
      switch (v.GetTensorTypeAndShapeInfo().GetElementType()) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: outputs.push_back(from_ort<float>(v)); break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: outputs.push_back(from_ort<double>(v)); break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: outputs.push_back(from_ort<int64_t>(v)); break;
        default: throw std::runtime_error(name + ": unexpected output type");
      }
    }
    return outputs;
  }

 private:
  Ort::Env env_;
  Ort::MemoryInfo mem_;
  std::map<std::string, std::unique_ptr<Ort::Session>> sessions_;
  std::map<std::string, uniaudio::GraphFile> names_;
};

}  // namespace

int main(int argc, char** argv) {
  return uniaudio::decoder_host_main(
      argc, argv, "uniaudio-rt-onnx-decoder/1",
      [](const uniaudio::DecoderSpec& spec, const uniaudio::HostOptions& o) {
        return std::make_unique<OrtGraphs>(spec, static_cast<int>(o.threads));
      },
      [](const uniaudio::HostOptions&) -> std::unique_ptr<uniaudio::Random> { return nullptr; });
}
