// 02_pretrain_simmim: SimMIM pretraining of a ViT on Fashion-MNIST or your own image folder. Masked
// patches become a learned mask token; a 1x1-conv + PixelShuffle head predicts their pixels; the loss is
// L1 on the masked pixels only. Any mask strategy of the masking module plugs in by its spec string.
//
//   simmim_02_pretrain_simmim --steps 600 --out out/simmim                 # Fashion-MNIST, mnist preset
//   simmim_02_pretrain_simmim --data ~/photos --preset tiny --image-size 224 --augment --mask simmim
//
// Writes <out>/checkpoint.pt (resumable with --resume; 04_linear_probe and 05_finetune read its encoder),
// <out>/metrics.jsonl and <out>/reconstruction*.png (rows: original | masked | reconstruction).

#include "../common/pretrain_flags.hpp"

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_02_pretrain_simmim", [&] {
    CLI::App app{"SimMIM pretraining (masked pixel regression with a mask token) of a ViT encoder."};
    examples::PretrainFlags f;
    f.out = "out/pretrain_simmim";
    f.add_to(app);
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    return examples::run_pretraining(f, "simmim", [](const simmim::ModelSpec& spec) {
      return simmim::SimMIM(spec.simmim_options());
    });
  });
}
