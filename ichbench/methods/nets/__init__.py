"""The torch side of the pretext methods: the networks they build around the U-Net and the
batched operations their losses need. Method modules import these inside `build_pretext` and
`pretext_loss`, so registering and listing methods never imports torch."""
