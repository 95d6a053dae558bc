// A complete SimMIM pretraining program written with the library (docs/training.md; tests/train builds it).
#include <simmim/simmim_train.hpp>

#include <iostream>

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::stoll(argv[1]) : 1000;
  const std::string out = argc > 2 ? argv[2] : "out/my_run";
  try {
    // Data: Fashion-MNIST's 60000 training images, normalized (or simmim::image_folder_split("photos/")).
    const simmim::DataSplit data = simmim::fashion_mnist_split(/*train=*/true, simmim::SplitOptions().limit(2048));

    // Model: the 28 x 28 ViT preset, described by name so the checkpoint can rebuild it.
    simmim::ModelSpec spec;
    spec.resolve();
    torch::manual_seed(0);
    simmim::SimMIM model(spec.simmim_options());

    // Masks: any strategy by its spec string (SimMIM's 60% of 7 px cells here).
    const auto masks = simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=7",
                                                   simmim::MaskGeometry(data.image_size, spec.patch_size));

    // The loop: SimMIM's recipe, progress, metrics, grids, checkpoints; resumable.
    const auto result = simmim::pretrain(model, *masks, data,
                                         simmim::PretrainOptions()
                                             .steps(steps)
                                             .batch_size(64)
                                             .recipe(simmim::PretrainRecipe::simmim())
                                             .out(out)
                                             .resume(true)
                                             .settings({{"model", spec.to_json()}}));
    std::cout << "final loss " << result.loss_ema << ", encoder in " << result.checkpoint << "\n";
  } catch (const std::exception& e) {
    std::cerr << "my_trainer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
