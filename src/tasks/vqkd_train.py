"""BEiT v2's tokenizer (VQ-KD): rows (image, label), labels ignored; the decoder of the quantised codes
regresses the frozen teacher's patch features. The codebook may start from k-means on the first batch."""
from src.errors import UserInputError
from src.models.beit.vqkd import VqkdDistillLoss, init_codebook_with_kmeans
from src.tasks.base import Task, frozen_helper


class VqkdTrain(Task):
    name = "vqkd_train"
    config_keys = frozenset({"teacher", "teacher_pretrained", "teacher_args", "teacher_mean", "teacher_std",
                             "quantize_kmeans_init"})

    def check(self):
        if not self.args.teacher:
            raise UserInputError("task vqkd_train needs a teacher model (e.g. beit_base_patch16_224)")

    def build_helper(self, log):
        args = self.args
        return frozen_helper(args.teacher, args.teacher_pretrained,
                             {"num_classes": 0, "img_size": args.image_size, **(args.teacher_args or {})},
                             "teacher", log)

    def model_arguments(self, helper):
        return {"decoder_out_dim": helper.embed_dim}  # the decoder regresses features as wide as the teacher's

    def loss_cell(self, network, helper):
        return VqkdDistillLoss(network, helper, self.args.teacher_mean, self.args.teacher_std)

    def prepare(self, network, train_data, log):
        args = self.args
        if args.quantize_kmeans_init and not (args.resume or args.pretrained):
            images = next(train_data.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]
            init_codebook_with_kmeans(network, images)
            log(f"codebook initialised by k-means on {images.shape[0]} images")
