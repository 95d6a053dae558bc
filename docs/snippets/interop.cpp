// docs/interop.md's example: a simmim ViT exported with timm's names, read back strictly, fitted to another
// image size and channel count, and a non-strict load that reports what did not fit.
#include <simmim/simmim_train.hpp>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  try {
    const std::string dir = argc > 1 ? argv[1] : ".";
    const std::string file = dir + "/vit_tiny.safetensors";

    // 1. Export with timm's names: timm's VisionTransformer(embed_dim=192, depth=12, num_heads=3,
    //    num_classes=0, global_pool="token", fc_norm=False) loads this with strict=True.
    simmim::VisionTransformer vit(simmim::VisionTransformerOptions::tiny(224, 16));
    simmim::save_module_safetensors(*vit, file, simmim::NameMap::timm_vit(), {{"format", "pt"}});

    // 2. Import into the same architecture. Strict: any missing, unexpected or shape-mismatched key throws,
    //    listing them all, before anything changes. timm has no SimMIM mask token: the report says it was kept.
    simmim::VisionTransformer same(simmim::VisionTransformerOptions::tiny(224, 16));
    auto report = simmim::load_module_safetensors(*same, file, simmim::NameMap::timm_vit());
    std::cout << "same architecture: " << report.summary() << "\n";

    // 3. Another geometry: one-channel 112 x 160 images (grid 7 x 10 instead of 14 x 14). Fit the two
    //    tensors whose shapes depend on it, then load strictly.
    simmim::VisionTransformer gray(simmim::VisionTransformerOptions::tiny({112, 160}, 16).in_chans(1));
    auto weights = simmim::load_safetensors(file).tensors;
    weights["pos_embed"] = simmim::resample_pos_embed(weights["pos_embed"], /*src=*/{14, 14}, /*dst=*/gray->grid(),
                                                      gray->num_prefix_tokens());
    weights["patch_embed.proj.weight"] = simmim::inflate_patch_embed(weights["patch_embed.proj.weight"], 1);
    report = simmim::load_module_tensors(*gray, weights, simmim::NameMap::timm_vit());
    std::cout << "fitted to 1 x 112 x 160: " << report.summary() << "\n";

    // 4. Non-strict: load what fits, read the report (here: a deeper model; blocks 12 to 13 are missing).
    simmim::VisionTransformer deeper(simmim::VisionTransformerOptions(224, 16, 192, 14, 3));
    report = simmim::load_module_safetensors(*deeper, file,
                                             simmim::LoadWeightsOptions(simmim::NameMap::timm_vit()).strict(false));
    std::cout << "deeper: " << report.loaded.size() << " loaded, " << report.missing.size() << " missing ("
              << report.missing.front() << ", ...)\n";
    return report.missing.size() == 2 * 12 ? 0 : 1;  // 12 tensors per block
  } catch (const std::exception& e) {
    std::cerr << "interop: " << e.what() << "\n";
    return 1;
  }
}
