package config

import _ "embed"

// Template is the commented lifeline.yaml that `lifeline init` writes.
//
//go:embed template.yaml
var Template []byte
