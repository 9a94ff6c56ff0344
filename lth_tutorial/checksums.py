"""Recorded checksums of the datasets (data, not code).

CONTENT_SHA256 maps (dataset, split, first N examples in the official order) to the SHA-256 of the
decoded images (uint8, N x C x H x W, C order) and of the labels (int64 little-endian); see
`data.content_sha256`. Content, not file bytes, is what is checked, so any faithful copy (download,
mirror, rebuilt files) is accepted. The prefixes recorded are the full MNIST splits and the CIFAR-10
subsets the quick profiles use. The full CIFAR-10 content could not be hashed where this package was
built (only its first 4,000 training / 1,000 test images were available), so full CIFAR-10 is checked
by torchvision's recorded MD5s of the original batch files instead (CIFAR10_ORIGINAL_MD5).
To add a record, run `python -m lth_tutorial.data` on a verified copy.
"""

CONTENT_SHA256: dict[tuple[str, str, int], tuple[str, str]] = {
    ("mnist", "train", 60000): ('741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757', 'e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c'),
    ("mnist", "test", 10000): ('6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161', '2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243'),
    ("cifar10", "train", 4000): ('28afc872aa454f5edfb44b9dc53187ac9e792b2e75c81b091face3432c78e91b', '9f4600c456726c0a94de60dc8fbb6186ebfef07335f5b9435f98a7079b858efa'),
    ("cifar10", "test", 1000): ('f167149948fc8fe0b9a76ba86421e987817f98b63761ba9415c5d42664d51f03', '6327b0e49549c8cf6ad65317a0fb463ec49ade30d02f63daec6b149052db4922'),
}

# MD5 of the original CIFAR-10 python batch files, as torchvision records them.
CIFAR10_ORIGINAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
