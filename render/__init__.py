"""Host-side model of what is drawn: assets, vocabulary, default avatar, scene, Renderer."""
