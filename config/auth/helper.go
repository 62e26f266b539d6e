package auth

import (
	"github.com/docker/docker-credential-helpers/client"
	"github.com/docker/docker-credential-helpers/credentials"
)

// RunHelper asks the credential helper docker-credential-NAME (found on the PATH) for
// host's credentials, as docker does: Docker Hub is asked as
// "https://index.docker.io/v1/". It returns ErrNoHelper when the helper has none.
func RunHelper(name, host string) (Entry, error) {
	server := NormalizeHost(host)
	if server == "docker.io" {
		server = "https://index.docker.io/v1/"
	}
	c, err := client.Get(client.NewShellProgramFunc("docker-credential-"+name), server)
	if err != nil {
		if credentials.IsErrCredentialsNotFound(err) {
			return Entry{}, ErrNoHelper
		}
		return Entry{}, err
	}
	if c.Username == "<token>" {
		return Entry{IdentityToken: c.Secret}, nil
	}
	return Entry{Username: c.Username, Password: c.Secret}, nil
}
