// 03_pretrain_mae: MAE pretraining of a ViT on Fashion-MNIST or your own image folder. The encoder sees
// only the visible patches (75% are dropped); a small transformer decoder fills in the rest; the loss is
// the MSE on the masked patches (optionally against per-patch normalized targets, --norm-pix).
//
//   simmim_03_pretrain_mae --steps 600 --out out/mae
//
// Same outputs as 02_pretrain_simmim; its checkpoint feeds 04_linear_probe and 05_finetune as well.

#include "../common/pretrain_flags.hpp"

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_03_pretrain_mae", [&] {
    CLI::App app{"MAE pretraining (encode the visible patches, decode all, MSE on the masked) of a ViT encoder."};
    examples::PretrainFlags f;
    f.out = "out/pretrain_mae";
    f.blr = 6e-4;  // MAE's 1.5e-4 per 256 images, restated per 512
    bool norm_pix = false;
    f.add_to(app);
    app.add_flag("--norm-pix", norm_pix, "per-patch normalized targets (MAE's better setting)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    f.model.norm_pix = norm_pix;  // recorded in the checkpoint's model description
    return examples::run_pretraining(f, "mae", [&](const simmim::ModelSpec& spec) {
      return simmim::MAE(spec.mae_options());
    });
  });
}
