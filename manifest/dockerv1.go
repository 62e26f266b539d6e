package manifest

import (
	"encoding/json"
	"time"
)

// Docker's own v1 image structures, mirrored field for field (order, JSON names and
// omitempty matter): legacy v1 ids are hashes of their encoding, and schema 1 configs
// of Docker before 1.8.3 are re-encoded through them on conversion.

// dockerV1Image mirrors moby's image.V1Image (see V1IDs): field order, JSON names and
// omitempty decide the v1 id.
type dockerV1Image struct {
	ID              string                 `json:"id,omitempty"`
	Parent          string                 `json:"parent,omitempty"`
	Comment         string                 `json:"comment,omitempty"`
	Created         time.Time              `json:"created"`
	Container       string                 `json:"container,omitempty"`
	ContainerConfig dockerContainerConfig  `json:"container_config"`
	DockerVersion   string                 `json:"docker_version,omitempty"`
	Author          string                 `json:"author,omitempty"`
	Config          *dockerContainerConfig `json:"config,omitempty"`
	Architecture    string                 `json:"architecture,omitempty"`
	Variant         string                 `json:"variant,omitempty"`
	OS              string                 `json:"os,omitempty"`
	Size            int64                  `json:",omitempty"`
}

// dockerContainerConfig mirrors moby's container.Config (Docker 20.10 to 24).
type dockerContainerConfig struct {
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
	Cmd             strSlice
	Healthcheck     *dockerHealthConfig `json:",omitempty"`
	ArgsEscaped     bool                `json:",omitempty"`
	Image           string
	Volumes         map[string]struct{}
	WorkingDir      string
	Entrypoint      strSlice
	NetworkDisabled bool   `json:",omitempty"`
	MacAddress      string `json:",omitempty"`
	OnBuild         []string
	Labels          map[string]string
	StopSignal      string   `json:",omitempty"`
	StopTimeout     *int     `json:",omitempty"`
	Shell           strSlice `json:",omitempty"`
}

// dockerHealthConfig mirrors moby's container.HealthConfig (durations in nanoseconds).
type dockerHealthConfig struct {
	Test        []string      `json:",omitempty"`
	Interval    time.Duration `json:",omitempty"`
	Timeout     time.Duration `json:",omitempty"`
	StartPeriod time.Duration `json:",omitempty"`
	Retries     int           `json:",omitempty"`
}

// strSlice decodes like moby's strslice.StrSlice: an array of strings, a single
// string (which becomes a one-element list) or null.
type strSlice []string

// UnmarshalJSON accepts ["a", "b"], "a" or null.
func (s *strSlice) UnmarshalJSON(b []byte) error {
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
