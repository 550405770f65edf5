package cognito

import (
	"crypto/rand"
	"fmt"
	"math/big"
)

// PasswordLength is the length of generated passwords; PFML's pool needs 12.
const PasswordLength = 24

// Character classes of the PFML password policy. Symbols are a subset of
// those Cognito accepts.
const (
	lowers  = "abcdefghijklmnopqrstuvwxyz"
	uppers  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits  = "0123456789"
	symbols = "!@#$%^&*()-_=+[]{}:;,.?~"
)

// GeneratePassword returns a random password from crypto/rand with at least
// one lower-case letter, upper-case letter, digit and symbol. Nobody ever
// learns it: the user resets it with "forgot password". Never log it.
func GeneratePassword() (string, error) {
	all := lowers + uppers + digits + symbols
	pw := make([]byte, 0, PasswordLength)
	for _, class := range []string{lowers, uppers, digits, symbols} {
		c, err := pick(class)
		if err != nil {
			return "", err
		}
		pw = append(pw, c)
	}
	for len(pw) < PasswordLength {
		c, err := pick(all)
		if err != nil {
			return "", err
		}
		pw = append(pw, c)
	}
	// Shuffle so the classes are not at fixed positions (Fisher-Yates).
	for i := len(pw) - 1; i > 0; i-- {
		j, err := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		if err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		pw[i], pw[j.Int64()] = pw[j.Int64()], pw[i]
	}
	return string(pw), nil
}

func pick(set string) (byte, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(set))))
	if err != nil {
		return 0, fmt.Errorf("generate password: %w", err)
	}
	return set[n.Int64()], nil
}
