// Package dockerv1 mirrors Docker's own v1 image structures field for field (order, JSON
// names and omitempty matter): legacy v1 ids are hashes of their encoding, so manifest
// (re-encoding old schema 1 configs) and archive (computing the ids docker save writes)
// must encode exactly as docker does.
package dockerv1

import (
	"encoding/json"
	"time"
)

// Image mirrors moby's image.V1Image (see archive.V1IDs): field order, JSON names and
// omitempty decide the v1 id.
type Image struct {
	ID              string           `json:"id,omitempty"`
	Parent          string           `json:"parent,omitempty"`
	Comment         string           `json:"comment,omitempty"`
	Created         time.Time        `json:"created"`
	Container       string           `json:"container,omitempty"`
	ContainerConfig ContainerConfig  `json:"container_config"`
	DockerVersion   string           `json:"docker_version,omitempty"`
	Author          string           `json:"author,omitempty"`
	Config          *ContainerConfig `json:"config,omitempty"`
	Architecture    string           `json:"architecture,omitempty"`
	Variant         string           `json:"variant,omitempty"`
	OS              string           `json:"os,omitempty"`
	Size            int64            `json:",omitempty"`
}

// ContainerConfig mirrors moby's container.Config (Docker 20.10 to 24).
type ContainerConfig struct {
	Hostname        string
	Domainname      string
	User            string
	AttachStdin     bool
	AttachStdout    bool
	AttachStderr    bool
	ExposedPorts    map[string]struct{} `json:",omitempty"`
	Tty             bool
	OpenStdin       bool
	StdinOnce       bool
	Env             []string
	Cmd             StrSlice
	Healthcheck     *HealthConfig `json:",omitempty"`
	ArgsEscaped     bool          `json:",omitempty"`
	Image           string
	Volumes         map[string]struct{}
	WorkingDir      string
	Entrypoint      StrSlice
	NetworkDisabled bool   `json:",omitempty"`
	MacAddress      string `json:",omitempty"`
	OnBuild         []string
	Labels          map[string]string
	StopSignal      string   `json:",omitempty"`
	StopTimeout     *int     `json:",omitempty"`
	Shell           StrSlice `json:",omitempty"`
}

// HealthConfig mirrors moby's container.HealthConfig (durations in nanoseconds).
type HealthConfig struct {
	Test        []string      `json:",omitempty"`
	Interval    time.Duration `json:",omitempty"`
	Timeout     time.Duration `json:",omitempty"`
	StartPeriod time.Duration `json:",omitempty"`
	Retries     int           `json:",omitempty"`
}

// StrSlice decodes like moby's strslice.StrSlice: an array of strings, a single
// string (which becomes a one-element list) or null.
type StrSlice []string

// UnmarshalJSON accepts ["a", "b"], "a" or null.
func (s *StrSlice) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	list := make([]string, 0, 1)
	if err := json.Unmarshal(b, &list); err != nil {
		var one string
		if err2 := json.Unmarshal(b, &one); err2 != nil {
			return err
		}
		list = append(list, one)
	}
	*s = list
	return nil
}
